"""An image's lifecycle, and the only code that changes it.

    pending ──claim──▶ processing ──stored──▶ ready
       ▲                  │   │
       └────release───────┘   └──gave up──▶ failed ──retry──▶ pending

pending      waiting for a worker: new, queued again, or released after an interruption
processing   claimed by a worker (``status_changed_at`` says when; each claim is an attempt)
ready        its vector from the configured model is stored
failed       given up, with the reason in ``embedding_error``

Reads of these states are ``ImageQuerySet`` methods (``pending()``, ``stale()``...); every
write is a function here, called by the pipeline, the worker's embedding service, the
admin actions and the commands.

Who is working on an image is held apart from its status, by PostgreSQL: a claim takes a
session-level advisory lock per image on the claiming worker's connection, and
``claims_end`` drops it once the image is stored, released or failed. A status says what
should happen; the lock says someone is doing it now. A redelivered message may take back
``processing`` images at once, because a dead worker's connection closes and its locks go
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

from .models import Image

IN_PROGRESS = [Image.Status.PENDING, Image.Status.PROCESSING]

# Advisory-lock keys are one bigint per database: images' keys carry this tag in their top
# 16 bits (image ids stay below 2**48), apart from any other use of advisory locks.
_LOCK_KEY = "(x'494d'::bigint << 48) | id"


@dataclass
class Claim:
    """What one worker took on: images to embed now, and what it did not take."""

    images: list[Image] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # named, but done, failed, or another worker's
    gave_up: dict[int, str] = field(default_factory=dict)  # over the attempt limit: now failed


def images_claim(*, image_ids: Iterable[int], fill_to: int = 0) -> Claim:
    """Mark the named images (and, up to ``fill_to``, other pending ones) as processing.

    Rows another transaction holds are skipped (``SKIP LOCKED``), so concurrent workers
    never take the same image in the same instant, and so are images another live worker
    holds (its advisory locks): they are its until it calls ``claims_end``. An image over EMBEDDING_MAX_ATTEMPTS
    is marked failed instead of claimed: a poison file stops after a bounded number of tries.
    """
    image_ids = list(image_ids)
    max_attempts = settings.EMBEDDING_MAX_ATTEMPTS
    claim = Claim()
    now = timezone.now()
    locked: list[int] = []
    try:
        with transaction.atomic():
            named = list(
                Image.objects.select_for_update(skip_locked=True)
                .filter(pk__in=image_ids, embedding_status__in=IN_PROGRESS)
                .order_by("pk")
            )
            # A processing image is taken back only from a worker that is gone (its lock went
            # with its connection); a live worker's images are skipped, whatever their status.
            locked += _locks_take([image.pk for image in named])
            named = [image for image in named if image.pk in set(locked)]
            extra = []
            if len(named) < fill_to:
                candidates = list(
                    Image.objects.select_for_update(skip_locked=True)
                    .pending()
                    .exclude(pk__in=image_ids)
                    .order_by("status_changed_at", "pk")[: fill_to - len(named)]
                )
                extra_locked = set(_locks_take([image.pk for image in candidates]))
                locked += extra_locked
                extra = [image for image in candidates if image.pk in extra_locked]
            for image in named + extra:
                if image.embedding_attempts >= max_attempts:
                    claim.gave_up[image.pk] = f"Gave up after {image.embedding_attempts} attempts."
                else:
                    claim.images.append(image)
            Image.objects.filter(pk__in=[image.pk for image in claim.images]).update(
                embedding_status=Image.Status.PROCESSING,
                embedding_attempts=F("embedding_attempts") + 1,
                status_changed_at=now,
            )
            _mark_failed(claim.gave_up, now=now)
    except BaseException:
        # Session-level locks outlive a rolled-back transaction: drop them by hand.
        claims_end(image_ids=locked)
        raise
    claims_end(image_ids=claim.gave_up)  # failed for good: nobody works on them
    for image in claim.images:
        image.embedding_status, image.status_changed_at = Image.Status.PROCESSING, now
        image.embedding_attempts += 1
    taken = {image.pk for image in claim.images} | set(claim.gave_up)
    claim.skipped = [image_id for image_id in image_ids if image_id not in taken]
    return claim


def claims_end(*, image_ids: Iterable[int]) -> None:
    """Stop holding these images (this connection claimed them): call once each is stored,
    released or failed, so another worker may take what still needs doing.

    When the database cannot be told, the connection is closed instead: the server drops a
    closed session's locks, so none outlives a failure.
    """
    image_ids = list(image_ids)
    if not image_ids:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY}) FROM unnest(%s::bigint[]) AS id", [image_ids])
    except (OperationalError, InterfaceError):
        connection.close()


def _locks_take(image_ids: list[int]) -> list[int]:
    """Those of ``image_ids`` this connection now holds; the others are another worker's.

    One call over the whole list with no LIMIT, so every lock taken is one returned (a lock
    taken by a filtered-out row would leak until the connection closes).
    """
    if not image_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM unnest(%s::bigint[]) AS id WHERE pg_try_advisory_lock({_LOCK_KEY})", [image_ids]
        )
        return [row[0] for row in cursor.fetchall()]


def images_mark_ready(*, image_ids: Iterable[int]) -> int:
    """Call in the transaction that stores the vectors, so "ready" always means "has one"."""
    return Image.objects.filter(pk__in=list(image_ids)).update(
        embedding_status=Image.Status.READY, embedding_error="", status_changed_at=timezone.now()
    )


def images_mark_failed(*, failures: dict[int, str]) -> None:
    """Give up on these images, each with its reason (a ready image stays ready)."""
    _mark_failed(failures, now=timezone.now())


def _mark_failed(failures: dict[int, str], *, now) -> None:
    for image_id, reason in failures.items():
        Image.objects.filter(pk=image_id).exclude(embedding_status=Image.Status.READY).update(
            embedding_status=Image.Status.FAILED, embedding_error=reason[:2000], status_changed_at=now
        )


def images_release(*, image_ids: Iterable[int], count_attempt: bool = True) -> int:
    """Hand images a worker claimed but could not finish back to the queue (processing -> pending).

    ``count_attempt=False`` when the interruption was not the images' fault (missing
    weights, a lost database connection), so it does not bring them closer to giving up.
    """
    updates = {"embedding_status": Image.Status.PENDING, "status_changed_at": timezone.now()}
    if not count_attempt:
        updates["embedding_attempts"] = F("embedding_attempts") - 1
    return Image.objects.filter(pk__in=list(image_ids)).processing().update(**updates)


def images_mark_pending(*, image_ids: Iterable[int]) -> int:
    """Start these images over (recompute, retry a failure): pending, no error, no attempts."""
    return Image.objects.filter(pk__in=list(image_ids)).update(
        embedding_status=Image.Status.PENDING,
        embedding_error="",
        embedding_attempts=0,
        status_changed_at=timezone.now(),
    )


def images_requeue_stuck(*, limit: int = 10_000) -> list[int]:
    """Images a worker should be working on but nobody is, made pending again for the sweeper.

    Pending for EMBEDDING_SWEEP_PENDING_AFTER seconds (a lost message, a broker outage during
    the upload) or processing for EMBEDDING_SWEEP_PROCESSING_AFTER (the worker died). The
    new timestamp keeps the next sweep from sending them twice while they wait in the queue.
    """
    now = timezone.now()
    stuck = Q(
        embedding_status=Image.Status.PENDING,
        status_changed_at__lt=now - timedelta(seconds=settings.EMBEDDING_SWEEP_PENDING_AFTER),
    ) | Q(
        embedding_status=Image.Status.PROCESSING,
        status_changed_at__lt=now - timedelta(seconds=settings.EMBEDDING_SWEEP_PROCESSING_AFTER),
    )
    with transaction.atomic():
        image_ids = list(
            Image.objects.select_for_update(skip_locked=True)
            .filter(stuck)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        Image.objects.filter(pk__in=image_ids).update(embedding_status=Image.Status.PENDING, status_changed_at=now)
    return image_ids
