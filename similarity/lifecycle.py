"""An image's embedding lifecycle, per model, and the only code that changes it.

    pending ──claim──▶ processing ──stored──▶ ready
       ▲                  │   │
       └────release───────┘   └──gave up──▶ failed ──retry──▶ pending

pending      waiting for a worker: new, queued again, or released after an interruption
processing   claimed by a worker (``status_changed_at`` says when; each claim is an attempt)
ready        its vector from that model is stored
failed       given up, with the reason in ``error``

The state is an ``EmbeddingJob`` row per (image, model identity); every function here works
on one model's rows, the configured model's unless told otherwise. Reads are
``similarity.selectors`` functions (the gallery's ``ImageQuerySet`` methods call them); every
write is a function here, called by the pipeline, the worker's embedding service, the
admin actions and the commands.

Who is working on an image is held apart from its status, by PostgreSQL: a claim takes a
session-level advisory lock per row on the claiming worker's connection, and
``claims_end`` drops it once the image is stored, released or failed. A status says what
should happen; the lock says someone is doing it now. A redelivered message may take back
``processing`` rows at once, because a dead worker's connection closes and its locks go
with it, while a duplicate or retried message, or the sweeper, can never hand an image a live
worker is still embedding to a second one. One claim at a time per connection: the locks
stack, so a connection that claimed an image must end that claim before claiming it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import EmbeddingJob
from .signals import embedding_status_changed
from .weights import model_identity

Status = EmbeddingJob.Status
IN_PROGRESS = [Status.PENDING, Status.PROCESSING]

# Advisory-lock keys are one bigint per database: rows' keys carry this tag in their top
# 16 bits (row ids stay below 2**48), apart from any other use of advisory locks.
_LOCK_KEY = "(x'494d'::bigint << 48) | id"


@dataclass
class Claim:
    """What one worker took on: jobs to do now (each with its image), and what it did not take."""

    jobs: list[EmbeddingJob] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # named, but done, failed, or another worker's
    gave_up: dict[int, str] = field(default_factory=dict)  # over the attempt limit: now failed
    # The row of each image taken or given up on: what ``claims_end`` lets go of.
    job_ids: dict[int, int] = field(default_factory=dict)


def _changed(image_ids: Iterable[int], status: str, identity: str | None) -> None:
    """Tell the site (pages show an image's status), after the write and in its transaction if
    it has one: a receiver acting "on commit" outside a transaction acts at once."""
    image_ids = list(image_ids)
    if image_ids:
        embedding_status_changed.send(
            sender=EmbeddingJob, image_ids=image_ids, status=status, identity=identity or model_identity()
        )


def _jobs(image_ids: Iterable[int], identity: str | None):
    return EmbeddingJob.objects.filter(image_id__in=list(image_ids), model_identity=identity or model_identity())


def images_claim(*, image_ids: Iterable[int], fill_to: int = 0, identity: str | None = None) -> Claim:
    """Mark the named images' rows (and, up to ``fill_to``, other pending ones) as processing.

    Rows another transaction holds are skipped (``SKIP LOCKED``), so concurrent workers
    never take the same image in the same instant, and so are rows another live worker
    holds (its advisory locks): they are its until it calls ``claims_end``. An image over EMBEDDING_MAX_ATTEMPTS
    is marked failed instead of claimed: a poison file stops after a bounded number of tries.
    """
    identity = identity or model_identity()
    image_ids = list(image_ids)
    max_attempts = settings.EMBEDDING_MAX_ATTEMPTS
    claim = Claim()
    now = timezone.now()
    locked: list[int] = []
    try:
        with transaction.atomic():
            queue = EmbeddingJob.objects.for_model(identity).select_for_update(skip_locked=True, of=("self",))
            named = list(
                queue.filter(image_id__in=image_ids, status__in=IN_PROGRESS).select_related("image").order_by("pk")
            )
            # A processing row is taken back only from a worker that is gone (its lock went
            # with its connection); a live worker's rows are skipped, whatever their status.
            locked += _locks_take([job.pk for job in named])
            named = [job for job in named if job.pk in set(locked)]
            extra = []
            if len(named) < fill_to:
                candidates = list(
                    queue.filter(status=Status.PENDING)
                    .exclude(image_id__in=image_ids)
                    .select_related("image")
                    .order_by("status_changed_at", "pk")[: fill_to - len(named)]
                )
                extra_locked = set(_locks_take([job.pk for job in candidates]))
                locked += extra_locked
                extra = [job for job in candidates if job.pk in extra_locked]
            gave_up = []
            for job in named + extra:
                claim.job_ids[job.image_id] = job.pk
                if job.attempts >= max_attempts:
                    claim.gave_up[job.image_id] = f"Gave up after {job.attempts} attempts."
                    gave_up.append(job.pk)
                else:
                    claim.jobs.append(job)
            EmbeddingJob.objects.filter(pk__in=[job.pk for job in claim.jobs]).update(
                status=Status.PROCESSING, attempts=F("attempts") + 1, status_changed_at=now
            )
            _changed([job.image_id for job in claim.jobs], Status.PROCESSING, identity)
            _mark_failed(EmbeddingJob.objects.filter(pk__in=gave_up), claim.gave_up, now=now, identity=identity)
    except BaseException:
        # Session-level locks outlive a rolled-back transaction: drop them by hand.
        claims_end(job_ids=locked)
        raise
    claims_end(job_ids=[claim.job_ids[image_id] for image_id in claim.gave_up])  # failed for good
    for job in claim.jobs:
        job.status, job.status_changed_at = Status.PROCESSING, now
        job.attempts += 1
    taken = {job.image_id for job in claim.jobs} | set(claim.gave_up)
    claim.skipped = [image_id for image_id in image_ids if image_id not in taken]
    return claim


def claims_end(*, job_ids: Iterable[int]) -> None:
    """Stop holding these rows (this connection claimed them): call once each is stored,
    released or failed, so another worker may take what still needs doing.

    When the database cannot be told, the connection is closed instead: the server drops a
    closed session's locks, so none outlives a failure.
    """
    job_ids = list(job_ids)
    if not job_ids:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY}) FROM unnest(%s::bigint[]) AS id", [job_ids])
    except (OperationalError, InterfaceError):
        connection.close()


def _locks_take(job_ids: list[int]) -> list[int]:
    """Those of ``job_ids`` this connection now holds; the others are another worker's.

    One call over the whole list with no LIMIT, so every lock taken is one returned (a lock
    taken by a filtered-out row would leak until the connection closes).
    """
    if not job_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM unnest(%s::bigint[]) AS id WHERE pg_try_advisory_lock({_LOCK_KEY})", [job_ids])
        return [row[0] for row in cursor.fetchall()]


def images_mark_ready(*, image_ids: Iterable[int], identity: str | None = None) -> int:
    """Call in the transaction that stores the vectors, so "ready" always means "has one"."""
    image_ids = list(image_ids)
    updated = _jobs(image_ids, identity).update(status=Status.READY, error="", status_changed_at=timezone.now())
    _changed(image_ids, Status.READY, identity)
    return updated


def images_mark_failed(*, failures: dict[int, str], identity: str | None = None) -> None:
    """Give up on these images, each with its reason (a ready image stays ready)."""
    _mark_failed(_jobs(failures, identity), failures, now=timezone.now(), identity=identity)


def _mark_failed(jobs, failures: dict[int, str], *, now, identity: str | None) -> None:
    # One UPDATE per distinct reason: a claim given up on at its time limit (thousands of
    # images, one reason) must be written in the moments before the hard limit, not row by row.
    by_reason: dict[str, list[int]] = {}
    for image_id, reason in failures.items():
        by_reason.setdefault(reason, []).append(image_id)
    for reason, image_ids in by_reason.items():
        jobs.filter(image_id__in=image_ids).exclude(status=Status.READY).update(
            status=Status.FAILED, error=reason[:2000], status_changed_at=now
        )
    _changed(failures, Status.FAILED, identity)


def images_release(*, image_ids: Iterable[int], count_attempt: bool = True, identity: str | None = None) -> int:
    """Hand images a worker claimed but could not finish back to the queue (processing -> pending).

    ``count_attempt=False`` when the interruption was not the images' fault (missing
    weights, a lost database connection), so it does not bring them closer to giving up.
    """
    updates = {"status": Status.PENDING, "status_changed_at": timezone.now()}
    if not count_attempt:
        updates["attempts"] = F("attempts") - 1
    image_ids = list(image_ids)
    released = _jobs(image_ids, identity).filter(status=Status.PROCESSING).update(**updates)
    _changed(image_ids, Status.PENDING, identity)
    return released


def images_mark_pending(*, image_ids: Iterable[int], identity: str | None = None) -> int:
    """Start these images over (new, recompute, retry a failure): pending, no error, no attempts.

    Makes the row of a model the image has none for yet (a new image, a new model).
    """
    identity = identity or model_identity()
    now = timezone.now()
    jobs = [
        EmbeddingJob(image_id=image_id, model_identity=identity, status=Status.PENDING, status_changed_at=now)
        for image_id in dict.fromkeys(image_ids)
    ]
    EmbeddingJob.objects.bulk_create(
        jobs,
        update_conflicts=True,
        unique_fields=["image", "model_identity"],
        update_fields=["status", "error", "attempts", "status_changed_at"],
    )
    _changed([job.image_id for job in jobs], Status.PENDING, identity)
    return len(jobs)


def images_requeue_stuck(*, limit: int = 10_000, identity: str | None = None) -> list[int]:
    """Images a worker should be working on but nobody is, made pending again for the sweeper.

    Pending for EMBEDDING_SWEEP_PENDING_AFTER seconds (a lost message, a broker outage during
    the upload) or processing for EMBEDDING_SWEEP_PROCESSING_AFTER (the worker died). The
    new timestamp keeps the next sweep from sending them twice while they wait in the queue.
    Only the configured model's rows: the workers the sweeper sends them to embed with it.
    """
    now = timezone.now()
    stuck = Q(
        status=Status.PENDING,
        status_changed_at__lt=now - timedelta(seconds=settings.EMBEDDING_SWEEP_PENDING_AFTER),
    ) | Q(
        status=Status.PROCESSING,
        status_changed_at__lt=now - timedelta(seconds=settings.EMBEDDING_SWEEP_PROCESSING_AFTER),
    )
    with transaction.atomic():
        rows = list(
            EmbeddingJob.objects.for_model(identity or model_identity())
            .select_for_update(skip_locked=True)
            .filter(stuck)
            .order_by("pk")
            .values_list("pk", "image_id")[:limit]
        )
        EmbeddingJob.objects.filter(pk__in=[pk for pk, _ in rows]).update(status=Status.PENDING, status_changed_at=now)
        _changed([image_id for _, image_id in rows], Status.PENDING, identity)
    return [image_id for _, image_id in rows]
