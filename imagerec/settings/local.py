"""Local development: embedded PostgreSQL and Redis unless their URLs are given."""

from imagerec import devservices

from .base import *  # noqa: F403
from .base import (
    CELERY_BROKER_URL,
    DATABASE_URL,
    IMAGEREC_DATA_DIR,
    SECRET_KEY,
    embedded_databases,
    persistent_connections,
)

SECRET_KEY = SECRET_KEY or "local-development-only-not-secret"

if not DATABASE_URL:
    DATABASES = persistent_connections(embedded_databases(IMAGEREC_DATA_DIR))
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = devservices.redis_url(IMAGEREC_DATA_DIR)
