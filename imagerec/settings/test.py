"""Tests: a real PostgreSQL with pgvector and a real Redis, kept apart from the dev site's.

The embedded servers for tests keep their data under ``<data dir>/test`` so a test run
never touches the data of a running ``make run``. Given URLs are used as they are.
"""

from imagerec import devservices

from .base import *  # noqa: F403
from .base import (
    CELERY_BROKER_URL,
    DATABASE_URL,
    IMAGEREC_DATA_DIR,
    embedded_databases,
    persistent_connections,
)

DEBUG = False
SECRET_KEY = "tests-only-not-secret"
TEST_DATA_DIR = IMAGEREC_DATA_DIR / "test"

if not DATABASE_URL:
    DATABASES = persistent_connections(embedded_databases(TEST_DATA_DIR))
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = devservices.redis_url(TEST_DATA_DIR)

# Deterministic random weights: tests never depend on a download.
EMBEDDING_WEIGHTS = "random"
EMBEDDING_RANDOM_SEED = 0

# A fixed place, so the worker processes that end-to-end tests start share it.
MEDIA_ROOT = TEST_DATA_DIR / "media"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
