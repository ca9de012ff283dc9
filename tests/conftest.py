"""Shared fixtures: images made in memory, a staff user, and a real Celery worker process."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from similarity.imaging import synthetic_photo

PROJECT_DIR = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="session", autouse=True)
def clean_media_root():
    media_root = Path(settings.MEDIA_ROOT)
    shutil.rmtree(media_root, ignore_errors=True)
    media_root.mkdir(parents=True, exist_ok=True)
    yield media_root
    shutil.rmtree(media_root.parent, ignore_errors=True)


# --- Users ----------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("curator", "curator@example.com", "not-a-real-password")
    client.force_login(user)
    client.user = user
    return client


# --- A real worker --------------------------------------------------------------------


def database_url_for_workers() -> str:
    """The URL of the database the tests use now (the test database, once created)."""
    from django.db import connection

    params = connection.settings_dict
    user = quote(params.get("USER") or "", safe="")
    password = quote(params.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = params.get("HOST") or ""
    name = quote(params["NAME"], safe="")
    if host.startswith("/"):
        return f"postgres://{credentials}/{name}?host={quote(host, safe='/')}"
    port = f":{params['PORT']}" if params.get("PORT") else ""
    return f"postgres://{credentials}{host}{port}/{name}"


class WorkerProcess:
    """A `celery worker` started as a separate process, as in production."""

    def __init__(self, extra_env: dict | None = None, concurrency: int = 1, beat: bool = False):
        self.extra_env = extra_env or {}
        self.concurrency = concurrency
        self.beat = beat
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, log_dir: Path) -> WorkerProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
            "DATABASE_URL": database_url_for_workers(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "IMAGEREC_TEST_SESSION": settings.TEST_SESSION,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "imagerec", "worker",
            "--loglevel=INFO", f"--concurrency={self.concurrency}", "--pool=prefork",
            "--without-gossip", "--without-mingle", f"--hostname=test-{time.monotonic_ns()}@%h",
        ]
        if self.beat:
            command += ["--beat", f"--schedule={log_dir / 'beat-schedule'}"]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The worker exited early:\n{self.log()}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"The worker did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its children), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def purge_queue() -> None:
    """Drop messages left by earlier tests so each test sees only its own work."""
    from imagerec.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(app.conf.task_default_queue)


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """start_worker(**options) -> a running WorkerProcess; all are stopped after the test."""
    workers: list[WorkerProcess] = []
    purge_queue()

    def start(**options) -> WorkerProcess:
        worker = WorkerProcess(**options).start(tmp_path / "workers")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker):
    return start_worker()


def wait_for(predicate, timeout: float = 60, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {message}")


# --- Rows -----------------------------------------------------------------------------


def unit_vector(*components: float, dimensions: int = 512) -> np.ndarray:
    """A 512-d unit vector whose first components are given (the rest zero)."""
    vector = np.zeros(dimensions, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


@pytest.fixture
def image_factory(db):
    """image_factory(seed, vector=None, status=..., **fields) -> a stored gallery.Image.

    With a vector, an embedding from the configured model is stored and the image is ready.
    """
    from gallery.models import Image
    from gallery.services import image_create
    from similarity.identity import model_identity
    from similarity.models import Embedding

    def make(seed: int, vector=None, status=None, **fields):
        image = image_create(upload=upload(f"photo-{seed}.jpg", encode(photo_like(seed, (64, 48)))), enqueue=False)
        if vector is not None:
            Embedding.objects.create(image=image, model_identity=model_identity(), vector=vector)
            status = status or Image.Status.READY
        updates = {**fields, **({"embedding_status": status} if status else {})}
        if updates:
            Image.objects.filter(pk=image.pk).update(**updates)
            image.refresh_from_db()
        return image

    return make
