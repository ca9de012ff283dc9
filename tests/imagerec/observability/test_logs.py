"""Pipeline log lines name their images; JSON when LOG_FORMAT says so.

(Web lines and their request ids: tests/imagerec/test_gunicorn.py, under a real gunicorn.)
"""

import json

import pytest

from gallery.models import Image, Rendition
from gallery.services import image_create
from tests.conftest import encode, photo_like, upload, wait_for

PIPELINE_LOGGERS = ("gallery.", "celery.app.trace", "celery.worker.strategy")


@pytest.mark.end_to_end
def test_every_pipeline_line_of_a_real_worker_names_its_images_in_json(start_worker):
    worker = start_worker(extra_env={"LOG_FORMAT": "json"})
    image_ids = [image_create(upload=upload(f"logs-{seed}.jpg", encode(photo_like(seed)))).pk for seed in range(3)]
    wait_for(lambda: Image.objects.filter(pk__in=image_ids).ready().count() == 3, timeout=60, message="3 embeddings")
    wait_for(
        lambda: Rendition.objects.filter(image_id__in=image_ids, spec=640).count() == 3, timeout=60, message="thumbnails"
    )
    worker.stop()

    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    pipeline = [record for record in records if record["logger"].startswith(PIPELINE_LOGGERS)]
    # Tasks of both kinds were received and finished (how many depends on which task claimed
    # which images first), and embeddings were stored.
    messages = [record["message"] for record in pipeline]
    for task in ("gallery.images_embed", "gallery.renditions_create"):
        assert any(message.startswith(f"Task {task}[") and message.endswith("] received") for message in messages)
        assert any(message.startswith(f"Task {task}[") and "] succeeded in " in message for message in messages)
    unnamed = [record["message"] for record in pipeline if not record.get("image_ids")]
    assert unnamed == []
    named = set().union(*(record["image_ids"] for record in pipeline))
    assert named == set(image_ids)
    embedded = [record for record in pipeline if record["message"].startswith("Embedded ")]
    assert sorted(set().union(*(record["image_ids"] for record in embedded))) == sorted(image_ids)
    # A task's own lines name the images it was sent, as its arguments did.
    for record in pipeline:
        if record["logger"] in ("celery.app.trace", "celery.worker.strategy"):
            assert record["image_ids"] == json.loads(record["data"]["args"])[0]
