"""The image lifecycle: claims that never overlap, releases, give-ups, and the sweeper's requeue."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from gallery import lifecycle
from gallery.models import Image


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_images_another_worker_is_claiming_at_that_moment(image_factory):
    """Two claims at once never take the same image: rows locked by the other are skipped."""
    held, free = image_factory(1), image_factory(2)
    locked, release = threading.Event(), threading.Event()

    def other_worker():
        # A second connection, as another worker process would have, holding one row's lock.
        try:
            with transaction.atomic():
                list(Image.objects.select_for_update().filter(pk=held.pk))
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        claim = lifecycle.images_claim(image_ids=[held.pk, free.pk])
    finally:
        release.set()
        thread.join()

    assert [image.pk for image in claim.images] == [free.pk]
    assert claim.skipped == [held.pk]
    assert Image.objects.get(pk=held.pk).embedding_status == Image.Status.PENDING


@pytest.mark.django_db
def test_a_claim_fills_up_with_the_longest_waiting_images(image_factory):
    named = image_factory(1)
    newer = image_factory(2, status_changed_at=timezone.now())
    older = image_factory(3, status_changed_at=timezone.now() - timedelta(minutes=5))
    image_factory(4, status=Image.Status.READY)

    claim = lifecycle.images_claim(image_ids=[named.pk], fill_to=2)

    assert [image.pk for image in claim.images] == [named.pk, older.pk]
    assert Image.objects.get(pk=newer.pk).embedding_status == Image.Status.PENDING
    assert set(Image.objects.processing().values_list("embedding_attempts", flat=True)) == {1}


@pytest.mark.django_db
def test_failing_never_undoes_a_stored_embedding(image_factory):
    ready, waiting = image_factory(1, status=Image.Status.READY), image_factory(2)

    lifecycle.images_mark_failed(failures={ready.pk: "late news", waiting.pk: "cannot decode"})

    assert Image.objects.get(pk=ready.pk).embedding_status == Image.Status.READY
    failed = Image.objects.get(pk=waiting.pk)
    assert (failed.embedding_status, failed.embedding_error) == (Image.Status.FAILED, "cannot decode")


@pytest.mark.django_db
def test_the_sweeper_requeues_only_what_waited_too_long(image_factory, settings):
    settings.EMBEDDING_SWEEP_PENDING_AFTER = 60
    settings.EMBEDDING_SWEEP_PROCESSING_AFTER = 600
    now = timezone.now()
    lost = image_factory(1, status_changed_at=now - timedelta(seconds=61))
    queued = image_factory(2, status_changed_at=now - timedelta(seconds=59))
    dead = image_factory(3, status=Image.Status.PROCESSING, status_changed_at=now - timedelta(seconds=601))
    busy = image_factory(4, status=Image.Status.PROCESSING, status_changed_at=now - timedelta(seconds=120))

    assert lifecycle.images_requeue_stuck() == [lost.pk, dead.pk]

    statuses = dict(Image.objects.values_list("pk", "embedding_status"))
    assert statuses[dead.pk] == Image.Status.PENDING and statuses[busy.pk] == Image.Status.PROCESSING
    assert statuses[queued.pk] == Image.Status.PENDING
    assert lifecycle.images_requeue_stuck() == []  # requeued once, not on every sweep
