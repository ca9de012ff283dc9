"""Local development: the embedded PostgreSQL and Redis, or whatever the URLs name."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, DATABASE_URL, SECRET_KEY

SECRET_KEY = SECRET_KEY or "local-development-only-not-secret"

if not DATABASE_URL or not CELERY_BROKER_URL:
    raise ImproperlyConfigured(
        "No database or broker configured: set DATABASE_URL and CELERY_BROKER_URL, or start the "
        "embedded PostgreSQL and Redis with `python -m devtools.services start` (`make run` "
        "does it), which writes their URLs to .env."
    )
# Static files come from the apps' folders (WhiteNoise's finders); collecting them into
# STATIC_ROOT is for production.
STATIC_ROOT = None
