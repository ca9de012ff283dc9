"""Production: every secret and service comes from the environment; nothing is embedded."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import ALLOWED_HOSTS, CELERY_BROKER_URL, DATABASE_URL, DEBUG, METRICS_PUBLIC, METRICS_TOKEN, SECRET_KEY

_problems = []
if not SECRET_KEY or SECRET_KEY.startswith(("local-", "tests-")) or len(SECRET_KEY) < 32:
    _problems.append("SECRET_KEY must be set to a long random value")
if DEBUG:
    _problems.append("DEBUG must be off (DEBUG=false)")
if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS or set(ALLOWED_HOSTS) <= {"localhost", "127.0.0.1", "[::1]"}:
    _problems.append("ALLOWED_HOSTS must list the site's real host names")
if not DATABASE_URL:
    _problems.append("DATABASE_URL must name the PostgreSQL server (with pgvector)")
if not CELERY_BROKER_URL:
    _problems.append("CELERY_BROKER_URL must name the Redis broker")
if not METRICS_TOKEN and not METRICS_PUBLIC:
    # /metrics and a failing /readyz tell whoever asks how busy the site is and what is down.
    _problems.append("METRICS_TOKEN must be set (or METRICS_PUBLIC=true to let anyone read /metrics)")
if _problems:
    raise ImproperlyConfigured("Production settings refuse to start: " + "; ".join(_problems) + ".")

STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# HTTPS only, terminated by the proxy in front, which must set X-Forwarded-Proto (and strip
# it from clients): a plain-HTTP request is redirected, cookies never travel in clear.
# `manage.py check --deploy` passes with these (tests/test_deploy.py).
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
# Other sites learn at most our origin, never a page's path.
SECURE_REFERRER_POLICY = "same-origin"

