"""Follow-up work: sent to the real broker after commit, never before, and swept up when lost."""

import base64
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from gallery import pipeline
from gallery.models import ArchiveUpload, Image, Rendition
from gallery.renditions import renditions_create
from imagerec.celery import app
from similarity import pipeline as embedding_pipeline
from similarity.pipeline import EMBED_TASK
from tests.conftest import purge_queues

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_queue():
    """What waits in this session's queue on the real Redis: [(task name, args), ...]."""
    purge_queues()

    def messages() -> list[tuple[str, list]]:
        raw = []
        with app.connection_for_read() as connection:
            tasks = (EMBED_TASK, pipeline.RENDITIONS_TASK, pipeline.ARCHIVE_UPLOAD_EXPAND_TASK)
            for queue in (settings.CELERY_TASK_ROUTES[name]["queue"] for name in tasks):
                raw += reversed(connection.default_channel.client.lrange(queue, 0, -1))  # pushed on the left
        found = []
        for item in raw:
            message = json.loads(item)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append((message["headers"]["task"], args))
        return found

    yield messages
    purge_queues()


def test_an_upload_sends_its_follow_up_work_after_the_commit_and_not_before(
    staff_client, make_upload, broker_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        staff_client.post(reverse("admin:gallery_image_add"), {"files": [make_upload(1), make_upload(2)]})
    assert broker_queue() == []  # nothing is sent while the rows could still roll back
    for callback in callbacks:
        callback()

    first, second = Image.objects.order_by("pk").values_list("pk", flat=True)
    # Each image's own work, sent when its own row committed.
    assert sorted(broker_queue()) == sorted([
        (EMBED_TASK, [[first]]),
        (EMBED_TASK, [[second]]),
        (pipeline.RENDITIONS_TASK, [[first]]),
        (pipeline.RENDITIONS_TASK, [[second]]),
    ])
    assert not Rendition.objects.exists()  # never made in the request


@pytest.mark.django_db(transaction=True)
def test_an_image_of_a_batch_has_its_work_sent_when_it_commits_whatever_comes_after(
    staff_client, make_upload, broker_queue, monkeypatch
):
    """Real commits: good.jpg's work is on the broker before the next file is even looked at."""
    from gallery import services

    seen_before_the_next_file = []
    inspect_image = services.inspect_image

    def inspect(upload):
        if upload.name == "broken.jpg":
            seen_before_the_next_file.extend(broker_queue())
            raise RuntimeError("a bug met while validating")
        return inspect_image(upload)

    monkeypatch.setattr(services, "inspect_image", inspect)
    files = [make_upload(1, name="good.jpg"), make_upload(2, name="broken.jpg")]

    response = staff_client.post(reverse("admin:gallery_image_add"), {"files": files})

    assert response.status_code == 200
    assert [(outcome.name, outcome.status) for outcome in response.context["outcomes"]] == [
        ("good.jpg", "added"), ("broken.jpg", "refused"),
    ]
    good = Image.objects.get()
    assert good.original_name == "good.jpg"
    expected = [(EMBED_TASK, [[good.pk]]), (pipeline.RENDITIONS_TASK, [[good.pk]])]
    assert seen_before_the_next_file == expected
    assert broker_queue() == expected  # sent once


def test_embeddings_are_sent_in_batches_of_the_worker_batch_size(image_factory, broker_queue, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    image_ids = [image_factory(seed).pk for seed in range(5)]

    assert embedding_pipeline.embeddings_publish(image_ids=image_ids)

    assert broker_queue() == [
        (EMBED_TASK, [image_ids[0:2]]),
        (EMBED_TASK, [image_ids[2:4]]),
        (EMBED_TASK, [image_ids[4:5]]),
    ]


def test_requeueing_starts_images_over_and_sends_only_their_embeddings(
    image_factory, broker_queue, django_capture_on_commit_callbacks
):
    failed = image_factory(1, status=Image.Status.FAILED, embedding_error="broken", embedding_attempts=5)
    with django_capture_on_commit_callbacks(execute=True):
        assert embedding_pipeline.embeddings_request(image_ids=[failed.pk]) == 1

    failed.refresh_from_db()
    assert (failed.embedding_status, failed.embedding_error, failed.embedding_attempts) == ("pending", "", 0)
    assert broker_queue() == [(EMBED_TASK, [[failed.pk]])]


def test_the_sweeper_sends_again_what_was_lost_and_nothing_else(image_factory, broker_queue, settings):
    long_ago = timezone.now() - timedelta(hours=1)
    lost_message = image_factory(1, status=Image.Status.PENDING, status_changed_at=long_ago)
    dead_worker = image_factory(2, status=Image.Status.PROCESSING, status_changed_at=long_ago)
    image_factory(3, status=Image.Status.PENDING)  # just queued: its message is on the way
    image_factory(4, status=Image.Status.PROCESSING)  # a live worker has it
    no_thumbnails = image_factory(5, status=Image.Status.READY, created_at=long_ago)
    image_factory(6, status=Image.Status.READY)  # just uploaded: its own rendition task is on the way
    image_factory(7, status=Image.Status.FAILED, created_at=long_ago)  # does not decode
    done = image_factory(8, status=Image.Status.READY, created_at=long_ago)
    renditions_create(image=done)

    assert pipeline.images_sweep() == {"embeddings": 2, "renditions": 1, "archives": 0}

    assert broker_queue() == [
        (EMBED_TASK, [[lost_message.pk, dead_worker.pk]]),
        (pipeline.RENDITIONS_TASK, [[no_thumbnails.pk]]),
    ]
    dead_worker.refresh_from_db()
    assert dead_worker.embedding_status == Image.Status.PENDING
    # Sent once: the next sweep finds them waiting for a worker, not lost.
    assert pipeline.images_sweep() == {"embeddings": 0, "renditions": 1, "archives": 0}


def test_the_sweeper_sends_again_archives_no_worker_is_expanding(broker_queue, settings):
    """A zip whose message was lost, or whose task gave up on a long outage, is not left
    "expanding" for ever: the sweeper sends it again, once per run's time limit."""
    stranded_since = timezone.now() - timedelta(seconds=settings.ARCHIVE_RUN_SECONDS + 300 + 120)
    archives = {}
    for name, state in [
        ("lost.zip", ArchiveUpload.State.QUEUED),
        ("gave-up.zip", ArchiveUpload.State.EXPANDING),
        ("live.zip", ArchiveUpload.State.EXPANDING),
        ("done.zip", ArchiveUpload.State.DONE),
        ("failed.zip", ArchiveUpload.State.FAILED),
    ]:
        archives[name] = ArchiveUpload.objects.create(name=name, state=state)
    ArchiveUpload.objects.exclude(name="live.zip").update(updated_at=stranded_since)  # auto_now on save

    assert pipeline.images_sweep()["archives"] == 2

    stranded = sorted([archives["lost.zip"].pk, archives["gave-up.zip"].pk])
    assert sorted(args[0] for task, args in broker_queue() if task == pipeline.ARCHIVE_UPLOAD_EXPAND_TASK) == stranded
    # Sent again: the next sweep gives that message a run's time before sending it once more.
    assert pipeline.images_sweep()["archives"] == 0
