"""Nothing is lost when a worker is killed, the broker goes away, or the database restarts.

Each test uses real processes: a `celery worker` (with the beat sweeper) started by the
test, and the embedded Redis and PostgreSQL that the test settings run.
"""

import time

import pytest
from django.conf import settings
from django.db import connections
from django.urls import reverse

from devtools import services
from gallery.models import Image
from gallery.services import image_create
from similarity.models import Embedding
from tests.conftest import encode, photo_like, upload, wait_for

pytestmark = [pytest.mark.end_to_end]

# The sweeper acts within seconds instead of minutes, so the tests finish quickly.
FAST_SWEEPER = {
    "EMBEDDING_SWEEP_INTERVAL": "1",
    "EMBEDDING_SWEEP_PENDING_AFTER": "3",
    "EMBEDDING_SWEEP_PROCESSING_AFTER": "8",
}

_embedded = services.services_urls(settings.TEST_DATA_DIR)
needs_embedded_redis = pytest.mark.skipif(
    _embedded.get("CELERY_BROKER_URL") != settings.CELERY_BROKER_URL, reason="stops and starts the embedded Redis"
)
needs_embedded_postgres = pytest.mark.skipif(
    _embedded.get("DATABASE_URL") != settings.DATABASE_URL, reason="restarts the embedded PostgreSQL"
)


def add_images(count: int, size=(1024, 768), first_seed: int = 0) -> list[int]:
    """Upload through the service (as the admin does); each commit queues its embedding."""
    return [
        image_create(upload=upload(f"fault-{seed}.jpg", encode(photo_like(seed, size)))).pk
        for seed in range(first_seed, first_seed + count)
    ]


def assert_each_embedded_exactly_once(image_ids):
    assert Image.objects.filter(pk__in=image_ids).exclude(pk__in=Image.objects.ready()).count() == 0
    assert Embedding.objects.filter(image_id__in=image_ids).count() == len(image_ids)


def test_a_worker_killed_mid_batch_loses_nothing(start_worker):
    first = start_worker(extra_env={"EMBEDDING_BATCH_SIZE": "8"})
    image_ids = add_images(32)
    wait_for(
        lambda: Image.objects.processing().exists() or Image.objects.ready().exists(),
        timeout=60,
        interval=0.02,
        message="the first batch to be claimed",
    )
    first.kill()
    unfinished = Image.objects.filter(pk__in=image_ids).exclude(pk__in=Image.objects.ready()).count()
    assert unfinished > 0, "the worker finished everything before it was killed"

    start_worker(beat=True, extra_env={"EMBEDDING_BATCH_SIZE": "8", **FAST_SWEEPER})
    wait_for(
        lambda: Image.objects.filter(pk__in=image_ids).ready().count() == len(image_ids),
        timeout=120,
        message="every image to be embedded after the crash",
    )
    assert_each_embedded_exactly_once(image_ids)


@needs_embedded_redis
def test_uploads_during_a_broker_outage_are_embedded_once_it_returns(staff_client, start_worker):
    start_worker(beat=True, extra_env=FAST_SWEEPER)
    data_dir = settings.TEST_DATA_DIR
    services.redis_stop(data_dir)
    try:
        started = time.monotonic()
        files = [upload(f"outage-{seed}.jpg", encode(photo_like(100 + seed))) for seed in range(4)]
        response = staff_client.post(reverse("admin:gallery_image_add"), {"files": files})
        upload_seconds = time.monotonic() - started
        # The upload is saved and answered promptly even though no task could be sent.
        assert response.status_code == 302
        assert upload_seconds < 15
        image_ids = list(Image.objects.values_list("pk", flat=True))
        assert len(image_ids) == 4
        assert {image.embedding_status for image in Image.objects.all()} == {Image.Status.PENDING}
        page = staff_client.get(reverse("gallery:image-detail", args=[image_ids[0]]))
        assert "Finding similar images" in page.content.decode()
    finally:
        services.redis_start(data_dir)

    wait_for(
        lambda: Image.objects.ready().count() == 4,
        timeout=120,
        message="the images uploaded during the outage to be embedded",
    )
    assert_each_embedded_exactly_once(image_ids)


@needs_embedded_postgres
def test_a_database_restart_while_the_worker_is_busy_loses_nothing(start_worker):
    start_worker(beat=True, extra_env={"EMBEDDING_BATCH_SIZE": "4", **FAST_SWEEPER})
    image_ids = add_images(24, first_seed=200)
    wait_for(lambda: Image.objects.ready().exists(), timeout=60, interval=0.05, message="work to start")
    connections.close_all()

    services.postgres_stop(settings.TEST_DATA_DIR)
    time.sleep(1)
    services.postgres_start(settings.TEST_DATA_DIR)

    wait_for(
        lambda: Image.objects.filter(pk__in=image_ids).ready().count() == len(image_ids),
        timeout=180,
        message="every image to be embedded after the database restart",
    )
    assert_each_embedded_exactly_once(image_ids)


def test_a_batch_over_the_soft_time_limit_is_marked_failed_with_the_reason(start_worker):
    from similarity.pipeline import WORKERS_OWN_LIMITS
    from similarity.tasks import images_embed

    start_worker(extra_env={"EMBEDDING_SOFT_TIME_LIMIT": "1", "EMBEDDING_TIME_LIMIT": "60", "EMBEDDING_BATCH_SIZE": "96"})
    image_ids = [
        image_create(upload=upload(f"slow-{seed}.jpg", encode(photo_like(seed, (800, 600)))), enqueue=False).pk
        for seed in range(300, 396)
    ]
    # One task with more work than the worker's one-second limit allows; like the pipeline,
    # the message carries no limits of its own, so the worker's settings apply.
    images_embed.apply_async(args=[image_ids], **WORKERS_OWN_LIMITS)

    wait_for(
        lambda: Image.objects.failed().count() == len(image_ids),
        timeout=90,
        message="the over-long batch to be marked failed",
    )
    reasons = {image.embedding_error for image in Image.objects.all()}
    assert reasons == {"Embedding took longer than the 1-second limit."}
    assert Embedding.objects.count() == 0
