"""Queues by kind of work: a worker pointed at one kind (`celery worker -Q <queue>`) takes only that."""

import pytest
from django.conf import settings

from gallery import pipeline
from gallery.models import Image, Rendition
from gallery.services import image_create
from imagerec.celery import app
from similarity.pipeline import EMBED_TASK
from tests.conftest import encode, photo_like, upload, wait_for

pytestmark = [pytest.mark.end_to_end]


def waiting(queue: str) -> int:
    with app.connection_for_read() as connection:
        return connection.default_channel.client.llen(queue)


def test_a_worker_on_the_embeddings_queue_embeds_but_leaves_thumbnails_to_others(start_worker):
    embeddings = settings.CELERY_TASK_ROUTES[EMBED_TASK]["queue"]
    renditions = settings.CELERY_TASK_ROUTES[pipeline.RENDITIONS_TASK]["queue"]
    assert embeddings != renditions
    start_worker(queues=embeddings)

    image = image_create(upload=upload("queued.jpg", encode(photo_like(1))))

    wait_for(lambda: Image.objects.get(pk=image.pk).embedding_status == Image.Status.READY, timeout=90,
             message="the embedding")
    # The thumbnails' message is still waiting for a worker that takes that queue.
    assert waiting(renditions) == 1
    assert not Rendition.objects.filter(image=image).exists()

    start_worker(queues=renditions)
    wait_for(lambda: Rendition.objects.filter(image=image).exists(), timeout=90, message="the renditions")
    assert waiting(renditions) == 0
