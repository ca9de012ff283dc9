"""The embedding lifecycle (a row per image and model): claims that never overlap, releases, give-ups, and the sweeper's requeue."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from gallery.models import Image
from similarity import lifecycle
from similarity.models import EmbeddingJob


def job(image) -> EmbeddingJob:
    """The image's row for the configured model (the only model in these tests)."""
    return EmbeddingJob.objects.get(image_id=image.pk)


def claimed(claim) -> list[int]:
    return [job.image_id for job in claim.jobs]


def claims_end(claim, image_ids) -> None:
    lifecycle.claims_end(job_ids=[claim.job_ids[image_id] for image_id in image_ids])


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_images_another_worker_is_claiming_at_that_moment(image_factory):
    """Two claims at once never take the same image: rows locked by the other are skipped."""
    held, free = image_factory(1), image_factory(2)
    locked, release = threading.Event(), threading.Event()

    def other_worker():
        # A second connection, as another worker process would have, holding one row's lock.
        try:
            with transaction.atomic():
                list(EmbeddingJob.objects.select_for_update().filter(image_id=held.pk))
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

    assert claimed(claim) == [free.pk]
    assert claim.skipped == [held.pk]
    assert job(held).status == Image.Status.PENDING
    claims_end(claim, [free.pk])


class OtherWorker:
    """Another worker's claim on its own connection, held until told to end it or to die."""

    def __init__(self, image_ids):
        self.image_ids, self.claimed = image_ids, None
        self._ready, self._finish, self._how = threading.Event(), threading.Event(), None
        self._thread = threading.Thread(target=self._run)

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(timeout=30)
        return self

    def _run(self):
        try:
            claim = lifecycle.images_claim(image_ids=self.image_ids)
            self.claimed = claimed(claim)
            self._ready.set()
            self._finish.wait(timeout=60)
            if self._how == "end":
                claims_end(claim, self.claimed)
        finally:
            # Ending or not, the connection goes: a killed worker's closes the same way.
            connection.close()

    def finish(self, how: str):
        self._how = how
        self._finish.set()
        self._thread.join()

    def __exit__(self, *exc):
        if self._thread.is_alive():
            self.finish("die")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("requeued", [False, True], ids=["still processing", "requeued by the sweeper"])
def test_images_a_live_worker_is_embedding_are_never_claimed_by_another(image_factory, requeued):
    """A retried or duplicate message names them, or the sweeper made them pending: still skipped."""
    busy, free = image_factory(1), image_factory(2)
    with OtherWorker([busy.pk]) as other:
        assert other.claimed == [busy.pk]
        if requeued:
            EmbeddingJob.objects.filter(image_id=busy.pk).update(status=Image.Status.PENDING)
        claim = lifecycle.images_claim(image_ids=[busy.pk, free.pk], fill_to=10)
        assert claimed(claim) == [free.pk]
        assert claim.skipped == [busy.pk]
        claims_end(claim, [free.pk])

        # Once it has finished with the image (here without storing it), it may be taken.
        other.finish("end")
    claim = lifecycle.images_claim(image_ids=[busy.pk])
    assert claimed(claim) == [busy.pk]
    claims_end(claim, [busy.pk])


@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_images_are_claimed_back_at_once(image_factory):
    """Its connection closed and its locks went with it: a redelivered message need not wait."""
    image = image_factory(1)
    with OtherWorker([image.pk]) as other:
        other.finish("die")
    assert job(image).status == Image.Status.PROCESSING

    claim = lifecycle.images_claim(image_ids=[image.pk])

    assert claimed(claim) == [image.pk]
    assert job(image).attempts == 2
    claims_end(claim, [image.pk])


@pytest.mark.django_db(transaction=True)
def test_a_claim_holds_no_lock_on_what_it_did_not_take(image_factory, settings):
    """Given-up images and a failed claim leave nothing held on the connection."""
    settings.EMBEDDING_MAX_ATTEMPTS = 2
    poison, fine = image_factory(1, embedding_attempts=2), image_factory(2)

    claim = lifecycle.images_claim(image_ids=[poison.pk, fine.pk])
    assert list(claim.gave_up) == [poison.pk]
    assert advisory_locks_held() == 1
    claims_end(claim, [fine.pk])
    assert advisory_locks_held() == 0

    EmbeddingJob.objects.filter(image_id=fine.pk).update(status=Image.Status.PENDING)
    with pytest.raises(TypeError):
        lifecycle.images_claim(image_ids=[fine.pk], fill_to="not a number")
    assert advisory_locks_held() == 0


def advisory_locks_held() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_a_claim_fills_up_with_the_longest_waiting_images(image_factory):
    named = image_factory(1)
    newer = image_factory(2, status_changed_at=timezone.now())
    older = image_factory(3, status_changed_at=timezone.now() - timedelta(minutes=5))
    image_factory(4, status=Image.Status.READY)

    claim = lifecycle.images_claim(image_ids=[named.pk], fill_to=2)

    assert claimed(claim) == [named.pk, older.pk]
    assert job(newer).status == Image.Status.PENDING
    assert set(EmbeddingJob.objects.filter(status=Image.Status.PROCESSING).values_list("attempts", flat=True)) == {1}
    claims_end(claim, [named.pk, older.pk])


@pytest.mark.django_db
def test_failing_never_undoes_a_stored_embedding(image_factory):
    ready, waiting = image_factory(1, status=Image.Status.READY), image_factory(2)

    lifecycle.images_mark_failed(failures={ready.pk: "late news", waiting.pk: "cannot decode"})

    assert job(ready).status == Image.Status.READY
    failed = job(waiting)
    assert (failed.status, failed.error) == (Image.Status.FAILED, "cannot decode")


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

    statuses = dict(EmbeddingJob.objects.values_list("image_id", "status"))
    assert statuses[dead.pk] == Image.Status.PENDING and statuses[busy.pk] == Image.Status.PROCESSING
    assert statuses[queued.pk] == Image.Status.PENDING
    assert lifecycle.images_requeue_stuck() == []  # requeued once, not on every sweep
