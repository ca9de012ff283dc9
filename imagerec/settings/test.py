"""Tests: a real PostgreSQL with pgvector and a real Redis, kept apart from the dev site's.

The embedded servers for tests keep their data under ``<data dir>/test`` so a test run
never touches the data of a running ``make run``. Given URLs are used as they are.
Each test session has its own database, media folder and task queue, so two sessions
side by side (and the worker processes each one starts) never see each other's work.
"""

import os

from imagerec import devservices

from .base import *  # noqa: F403
from .base import (
    CELERY_BROKER_URL,
    DATABASE_URL,
    IMAGEREC_DATA_DIR,
    TEST_SESSION_ID,
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

# Worker processes started by a test inherit the session id, so they share these.
TEST_SESSION = TEST_SESSION_ID or str(os.getpid())
for _database in DATABASES.values():
    _database.setdefault("TEST", {})["NAME"] = f"test_imagerec_{TEST_SESSION}"
MEDIA_ROOT = TEST_DATA_DIR / "sessions" / TEST_SESSION / "media"
CELERY_TASK_DEFAULT_QUEUE = f"embeddings-test-{TEST_SESSION}"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
