"""/metrics: requests by view and status, images by status, and what every worker did."""

import pytest
from django.conf import settings

from devtools import services
from gallery.models import Image
from gallery.services import image_create
from tests.conftest import encode, photo_like, unit_vector, upload, wait_for

from .helpers import scrape, value


@pytest.mark.django_db
def test_requests_are_counted_by_view_and_status_with_their_latency(client, image_factory):
    image = image_factory(1)
    before = scrape(client)

    assert client.get("/").status_code == 200
    assert client.get(f"/images/{image.pk}/").status_code == 200
    assert client.get("/images/999999/").status_code == 404

    after = scrape(client)

    def increase(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "imagerec_http_request_duration_seconds_count"
    assert increase(requests, view="gallery:image-list", method="GET", status="200") == 1
    assert increase(requests, view="gallery:image-detail", method="GET", status="200") == 1
    assert increase(requests, view="gallery:image-detail", method="GET", status="404") == 1
    # Every request falls in the histogram's last bucket; these were quick.
    slow_bucket = dict(view="gallery:image-detail", method="GET", status="404", le="+Inf")
    assert increase("imagerec_http_request_duration_seconds_bucket", **slow_bucket) == 1
    assert increase("imagerec_http_request_duration_seconds_bucket", **{**slow_bucket, "le": "5.0"}) == 1


@pytest.mark.django_db
def test_images_are_counted_by_embedding_status(client, image_factory):
    image_factory(1)
    image_factory(2)
    image_factory(3, vector=unit_vector(1, 0))
    image_factory(4, status=Image.Status.FAILED)

    samples = scrape(client)

    counts = {status: value(samples, "imagerec_images", status=status) for status in Image.Status.values}
    assert counts == {"pending": 2, "processing": 0, "ready": 1, "failed": 1}


@pytest.mark.django_db
def test_metrics_can_require_a_bearer_token(client, settings):
    settings.METRICS_TOKEN = "a-long-scrape-token"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(client, headers={"Authorization": "Bearer a-long-scrape-token"})


@pytest.mark.end_to_end
def test_a_real_workers_embeddings_and_tasks_show_up_in_the_web_metrics(client, worker):
    image_ids = [image_create(upload=upload(f"metrics-{seed}.jpg", encode(photo_like(seed)))).pk for seed in range(3)]
    wait_for(
        lambda: Image.objects.filter(pk__in=image_ids).ready().count() == 3, timeout=60, message="3 images embedded"
    )

    def worker_counted_all():
        samples = scrape(client)
        return samples if value(samples, "imagerec_images_embedded_total", worker=worker.hostname) == 3 else None

    samples = wait_for(worker_counted_all, timeout=30, message="the worker's embeddings in /metrics")
    tasks = value(
        samples, "imagerec_task_duration_seconds_count", task="similarity.images_embed", outcome="success", worker=worker.hostname
    )
    assert 1 <= tasks <= 3
    assert value(samples, "imagerec_images_embedding_failed_total", worker=worker.hostname) == 0
    # A task whose images another task had already claimed runs no forward pass.
    forward = value(samples, "imagerec_embedding_step_seconds_count", step="forward", worker=worker.hostname)
    assert 1 <= forward <= tasks
    assert value(samples, "imagerec_images", status="ready") == 3
    age = samples[("imagerec_worker_heartbeat_age_seconds", frozenset({("worker", worker.hostname)}))]
    assert 0 <= age <= settings.WORKER_HEARTBEAT_MAX_AGE


_embedded = services.services_urls(settings.TEST_DATA_DIR)


@pytest.mark.skipif(
    _embedded.get("CELERY_BROKER_URL") != settings.CELERY_BROKER_URL, reason="stops and starts the embedded Redis"
)
@pytest.mark.django_db
def test_the_web_metrics_are_scraped_while_the_broker_is_down(client):
    client.get("/")
    services.redis_stop(settings.TEST_DATA_DIR)
    try:
        samples = scrape(client)
    finally:
        services.redis_start(settings.TEST_DATA_DIR)

    assert value(samples, "imagerec_http_request_duration_seconds_count", view="gallery:image-list", method="GET", status="200") >= 1
    assert value(samples, "imagerec_images", status="pending") == 0
    assert not any(name == "imagerec_worker_heartbeat_age_seconds" for name, _ in samples)
