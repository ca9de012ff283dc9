"""Tests: a real PostgreSQL with pgvector and a real Redis, kept apart from the dev site's.

`make test` starts embedded servers for the tests under ``<data dir>/test`` (never the
dev site's) and passes their URLs in the environment; given URLs are used as they are.
Each test session has its own database, media folder and task queue, so two sessions
side by side (and the worker processes each one starts) never see each other's work.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, DATABASE_URL, DATABASES, IMAGEREC_DATA_DIR, TEST_EMBEDDING_DEVICE, TEST_SESSION_ID

if not DATABASE_URL or not CELERY_BROKER_URL:
    raise ImproperlyConfigured(
        "The tests need DATABASE_URL and CELERY_BROKER_URL. Run them with `make test`, which starts "
        "embedded servers for them (python -m devtools.services run --data-dir .devdata/test -- pytest)."
    )

DEBUG = False
SECRET_KEY = "tests-only-not-secret"
# Where `make test` keeps the embedded servers; the fault tests stop and start them there.
TEST_DATA_DIR = IMAGEREC_DATA_DIR / "test"

# Deterministic random weights: tests never depend on a download.
EMBEDDING_WEIGHTS = "random"
EMBEDDING_RANDOM_SEED = 0
# The CPU, on a machine with a GPU too: the tests' reference vectors are the CPU worker's, and
# the GPU tests load a CUDA encoder of their own beside it (tests/similarity/encoders/test_gpu.py).
EMBEDDING_DEVICE = TEST_EMBEDDING_DEVICE
# Claims counted in batches, not sized by a worker's measured rate: the scale-out tests bound
# what one claim may hold (tests/similarity/test_embedding.py turns the sizing on).
EMBEDDING_CLAIM_SECONDS = 0

# Worker processes started by a test inherit the session id, so they share these.
TEST_SESSION = TEST_SESSION_ID or str(os.getpid())
for _database in DATABASES.values():
    _database.setdefault("TEST", {})["NAME"] = f"test_imagerec_{TEST_SESSION}"
# Everything a session writes lives under its own folder, which the session removes at the end.
TEST_SESSION_DIR = TEST_DATA_DIR / "sessions" / TEST_SESSION
MEDIA_ROOT = TEST_SESSION_DIR / "media"
CELERY_TASK_QUEUES, CELERY_TASK_ROUTES, CELERY_TASK_DEFAULT_QUEUE = celery_queues(f"test-{TEST_SESSION}-")  # noqa: F405
CACHES["default"]["KEY_PREFIX"] = f"imagerec-test-{TEST_SESSION}"  # noqa: F405
WORKER_STATE_KEY_PREFIX = f"imagerec-test-{TEST_SESSION}"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Static files come from the apps' folders (WhiteNoise's finders); collecting them into
# STATIC_ROOT is for production.
STATIC_ROOT = None

# Every impression in the buffer at once: tests read it right after a page.
CLICKS_IMPRESSION_BATCH = 1
