"""Shared fixtures: images made in memory, a staff user, and real Celery worker processes."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from devtools.workers import PROJECT_DIR, WorkerProcess, database_url, purge_queues, wait_for  # noqa: F401
from imaging import synthetic_photo

# --- Images ---------------------------------------------------------------------------


def photo_like(seed: int, size: tuple[int, int] = (320, 240)) -> PILImage.Image:
    return synthetic_photo(seed, size)


def encode(image: PILImage.Image, image_format: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    if image_format == "JPEG":
        options.setdefault("quality", 90)
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def upload(name: str, content: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


@pytest.fixture
def make_upload():
    """make_upload(seed, name=..., size=..., image_format=...) -> an uploaded photo."""

    def make(seed: int, name: str | None = None, size=(320, 240), image_format="JPEG"):
        extension = {"JPEG": "jpg"}.get(image_format, image_format.lower())
        return upload(name or f"photo-{seed}.{extension}", encode(photo_like(seed, size), image_format))

    return make


# --- Media ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_page_cache():
    """Each test starts with no cached page: the database is emptied between tests without the
    signals that drop them, and ids, paths and hosts repeat from test to test."""
    from django.core.cache import cache

    from pagecache.store import DIRTY_KEY, GENERATION_KEY

    cache.delete(DIRTY_KEY)
    try:
        cache.incr(GENERATION_KEY)
    except ValueError:  # none yet: the first page starts one
        pass


@pytest.fixture(scope="session", autouse=True)
def clean_media_root():
    """A fresh media folder for the session, and its session folder removed at the end.

    Only ever a folder under the test settings' own sessions folder: refuse anything else.
    """
    session_dir = Path(settings.TEST_SESSION_DIR).resolve()
    assert session_dir.parent == (Path(settings.TEST_DATA_DIR) / "sessions").resolve(), session_dir
    media_root = Path(settings.MEDIA_ROOT)
    assert media_root.resolve().is_relative_to(session_dir), media_root
    shutil.rmtree(session_dir, ignore_errors=True)
    media_root.mkdir(parents=True, exist_ok=True)
    yield media_root
    shutil.rmtree(session_dir, ignore_errors=True)


# --- Users ----------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("curator", "curator@example.com", "not-a-real-password")
    client.force_login(user)
    client.user = user
    return client


# --- A real worker --------------------------------------------------------------------


def worker_environment(**extra) -> dict:
    """What a worker started by a test needs: the test database, broker, queue and media."""
    from django.db import connection

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
        "DATABASE_URL": database_url(connection.settings_dict),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "IMAGEREC_TEST_SESSION": settings.TEST_SESSION,
        **extra,
    }


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """start_worker(extra_env={...}, **options) -> a running WorkerProcess; all stop after the test."""
    workers: list[WorkerProcess] = []
    purge_queues()

    def start(extra_env: dict | None = None, **options) -> WorkerProcess:
        worker = WorkerProcess(worker_environment(**(extra_env or {})), **options).start(tmp_path / "workers")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker):
    return start_worker()


# --- Rows -----------------------------------------------------------------------------


def unit_vector(*components: float, dimensions: int = 512) -> np.ndarray:
    """A 512-d unit vector whose first components are given (the rest zero)."""
    vector = np.zeros(dimensions, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


@pytest.fixture
def image_factory(db):
    """image_factory(seed, vector=None, status=..., embedding_error=..., embedding_attempts=...,
    status_changed_at=..., **fields) -> a stored gallery.Image.

    With a vector, an embedding from the configured model is stored and the image is ready.
    The status, error and attempts are its row for the configured model (similarity's).
    """
    from gallery.models import Image
    from gallery.services import image_create
    from similarity.models import Embedding, EmbeddingJob
    from similarity.weights import model_identity

    def make(
        seed: int, vector=None, status=None, embedding_error=None, embedding_attempts=None, status_changed_at=None,
        **fields,
    ):
        image = image_create(upload=upload(f"photo-{seed}.jpg", encode(photo_like(seed, (64, 48)))), enqueue=False)
        if vector is not None:
            Embedding.objects.create(image=image, model_identity=model_identity(), vector=vector)
            status = status or Image.Status.READY
        job = {
            "status": status, "error": embedding_error, "attempts": embedding_attempts,
            "status_changed_at": status_changed_at,
        }
        job = {name: value for name, value in job.items() if value is not None}
        if job:
            EmbeddingJob.objects.filter(image=image, model_identity=model_identity()).update(**job)
        if fields:
            Image.objects.filter(pk=image.pk).update(**fields)
            image.refresh_from_db()
        return image

    return make
