"""Writes for embeddings: queueing work and storing vectors.

The worker's path is ``embeddings_compute``: claim images, decode them, run the encoder on
the batch, store the vectors. Each step commits on its own so a crash at any point leaves
rows that a later delivery or the sweeper completes; nothing is half-written.

Decoding runs in a pool of threads (Pillow releases the GIL), one per CPU the worker process
may use, so a batch decodes on all of them at once; a claim of several batches is a pipeline
in which batch n+1 decodes while batch n goes through the network and into the database.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from gallery.models import Image

from .imaging import UndecodableImage, load_rgb
from .models import Embedding

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    ready: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embeddings_publish(*, image_ids: Iterable[int]) -> bool:
    """Send embedding tasks now. False when the broker is unreachable (the sweeper retries)."""
    from .tasks import embed_images

    image_ids = list(image_ids)
    try:
        for chunk in _chunks(image_ids, settings.EMBEDDING_BATCH_SIZE):
            embed_images.delay(chunk)
    except Exception:
        logger.warning(
            "Broker unavailable: %d image(s) stay pending until the sweeper queues them again",
            len(image_ids),
            exc_info=True,
        )
        return False
    return True


def embeddings_enqueue(*, image_ids: Iterable[int]) -> None:
    """Queue embeddings once the current transaction commits (never for rolled-back rows)."""
    image_ids = list(image_ids)
    if image_ids:
        transaction.on_commit(lambda: embeddings_publish(image_ids=image_ids))


def images_mark_pending(*, images) -> int:
    """Put images back in the queue's care (recompute, retry); returns how many changed."""
    return images.update(
        embedding_status=Image.Status.PENDING,
        embedding_error="",
        embedding_attempts=0,
        status_changed_at=timezone.now(),
    )


def images_mark_failed(*, failures: dict[int, str]) -> None:
    now = timezone.now()
    for image_id, reason in failures.items():
        Image.objects.filter(pk=image_id).exclude(embedding_status=Image.Status.READY).update(
            embedding_status=Image.Status.FAILED, embedding_error=reason[:2000], status_changed_at=now
        )


def _claim(image_ids: list[int], *, fill_to: int) -> tuple[list[Image], list[int], dict[int, str]]:
    """Mark the named images (and, to fill the batch, other pending ones) as processing."""
    max_attempts = settings.EMBEDDING_MAX_ATTEMPTS
    gave_up: dict[int, str] = {}
    with transaction.atomic():
        named = list(
            Image.objects.select_for_update(skip_locked=True)
            .filter(pk__in=image_ids, embedding_status__in=[Image.Status.PENDING, Image.Status.PROCESSING])
            .order_by("pk")
        )
        extra = []
        if len(named) < fill_to:
            extra = list(
                Image.objects.select_for_update(skip_locked=True)
                .pending()
                .exclude(pk__in=image_ids)
                .order_by("status_changed_at", "pk")[: fill_to - len(named)]
            )
        claimed = []
        for image in named + extra:
            if image.embedding_attempts >= max_attempts:
                gave_up[image.pk] = f"Gave up after {image.embedding_attempts} attempts."
            else:
                claimed.append(image)
        now = timezone.now()
        Image.objects.filter(pk__in=[image.pk for image in claimed]).update(
            embedding_status=Image.Status.PROCESSING,
            embedding_attempts=F("embedding_attempts") + 1,
            status_changed_at=now,
        )
    claimed_ids = {image.pk for image in claimed} | set(gave_up)
    skipped = [image_id for image_id in image_ids if image_id not in claimed_ids]
    return claimed, skipped, gave_up


@functools.cache
def _decode_threads(count: int, pid: int) -> ThreadPoolExecutor:
    """This process's decode threads (keyed by pid: a forked child makes its own)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="decode")


def _decode_one(image: Image, prepare: Callable | None) -> tuple[object, str | None, float]:
    """(picture or prepared picture, failure reason, CPU seconds spent); runs in a decode thread."""
    started = time.thread_time()
    try:
        with image.file.open("rb") as handle:
            picture = load_rgb(handle, max_pixels=settings.IMAGE_MAX_PIXELS)
        if prepare is not None:
            picture = prepare(picture)
    except UndecodableImage as error:
        return None, str(error), time.thread_time() - started
    except FileNotFoundError:
        return None, "The stored file is missing.", time.thread_time() - started
    return picture, None, time.thread_time() - started


def _decode_start(images: list[Image], *, prepare: Callable | None = None, threads: int = 1) -> list[Future]:
    """Start decoding in the background; ``_decode_finish`` collects the results in order."""
    pool = _decode_threads(max(1, threads), os.getpid())
    return [pool.submit(_decode_one, image, prepare) for image in images]


def _decode_finish(
    images: list[Image], futures: list[Future]
) -> tuple[list[tuple[Image, object]], dict[int, str], float]:
    decoded, failures, cpu = [], {}, 0.0
    for image, future in zip(images, futures):
        picture, failure, seconds = future.result()
        cpu += seconds
        if failure is None:
            decoded.append((image, picture))
        else:
            failures[image.pk] = failure
    return decoded, failures, cpu


def embeddings_store(*, vectors_by_image: dict[int, object], identity: str) -> None:
    """Store vectors and mark their images ready, in one transaction; safe to repeat."""
    now = timezone.now()
    with transaction.atomic():
        Embedding.objects.bulk_create(
            [
                Embedding(image_id=image_id, model_identity=identity, vector=vector, created_at=now)
                for image_id, vector in vectors_by_image.items()
            ],
            update_conflicts=True,
            unique_fields=["image", "model_identity"],
            update_fields=["vector", "created_at"],
        )
        # Older models' vectors are stale once the current one exists.
        Embedding.objects.filter(image_id__in=vectors_by_image).exclude(model_identity=identity).delete()
        Image.objects.filter(pk__in=vectors_by_image).update(
            embedding_status=Image.Status.READY, embedding_error="", status_changed_at=now
        )


def embeddings_compute(*, image_ids: Iterable[int], fill_batch: bool = True) -> BatchResult:
    """Embed the given images (plus other waiting ones, up to a claim) and store the vectors.

    With ``fill_batch``, a task also claims other pending images: up to
    EMBEDDING_CLAIM_BATCHES batches of EMBEDDING_BATCH_SIZE when the queue is deep, so later
    tasks find their images done. Each batch is stored (and its images become ready) as soon
    as it is through the network.
    """
    from .encoder import get_encoder  # the worker's path only: torch stays out of web processes

    image_ids = list(image_ids)
    result = BatchResult()
    batch_size = settings.EMBEDDING_BATCH_SIZE
    claim_size = batch_size * max(1, settings.EMBEDDING_CLAIM_BATCHES)
    fill_to = max(claim_size, len(image_ids)) if fill_batch else len(image_ids)
    started = time.perf_counter()
    claimed, result.skipped, gave_up = _claim(image_ids, fill_to=fill_to)
    # Wall seconds of each step in this thread; decode_cpu: the decode threads' CPU time.
    result.timings = timings = dict.fromkeys(("claim", "decode", "forward", "store", "decode_cpu"), 0.0)
    timings["claim"] = time.perf_counter() - started
    if gave_up:
        images_mark_failed(failures=gave_up)
        result.failed.update(gave_up)
    if not claimed:
        return result

    encoder = get_encoder()
    batches = list(_chunks(claimed, batch_size))
    in_flight = _decode_start(batches[0], prepare=encoder.pixels, threads=encoder.threads)
    for index, batch in enumerate(batches):
        waited = time.perf_counter()
        decoded, failures, cpu = _decode_finish(batch, in_flight)
        decoded_at = time.perf_counter()
        if index + 1 < len(batches):
            # The next batch decodes while this one goes through the network and is stored.
            # With torch's threads waiting passively, sharing the cores this way measured as
            # fast as taking turns, and the database writes no longer leave them idle.
            in_flight = _decode_start(batches[index + 1], prepare=encoder.pixels, threads=encoder.threads)
        if failures:
            images_mark_failed(failures=failures)
            result.failed.update(failures)
        vectors = encoder.embed_pixels([pixels for _, pixels in decoded])
        embedded_at = time.perf_counter()
        if decoded:
            embeddings_store(
                vectors_by_image={image.pk: vector for (image, _), vector in zip(decoded, vectors)},
                identity=encoder.identity,
            )
            stored_at = time.perf_counter()
            result.ready.extend(image.pk for image, _ in decoded)
            timings["forward"] += embedded_at - decoded_at
            timings["store"] += stored_at - embedded_at
        timings["decode"] += decoded_at - waited
        timings["decode_cpu"] += cpu
    return result


def images_needing_embedding():
    """Images a worker should be working on but nobody is: queued long ago, or stuck."""
    now = timezone.now()
    pending_after = timedelta(seconds=settings.EMBEDDING_SWEEP_PENDING_AFTER)
    processing_after = timedelta(seconds=settings.EMBEDDING_SWEEP_PROCESSING_AFTER)
    return Image.objects.filter(
        Q(embedding_status=Image.Status.PENDING, status_changed_at__lt=now - pending_after)
        | Q(embedding_status=Image.Status.PROCESSING, status_changed_at__lt=now - processing_after)
    )


def embeddings_sweep() -> int:
    """Re-queue images left pending or processing too long (broker outage, killed worker)."""
    image_ids = list(images_needing_embedding().order_by("pk").values_list("pk", flat=True)[:10_000])
    if image_ids:
        # Processing ones go back to pending so a worker's claim picks them up again; the new
        # timestamp keeps the next sweep from sending them twice while they wait in the queue.
        Image.objects.filter(pk__in=image_ids).update(
            embedding_status=Image.Status.PENDING, status_changed_at=timezone.now()
        )
        embeddings_publish(image_ids=image_ids)
    return len(image_ids)


def near_duplicates_mark(*, image_ids: Iterable[int]) -> int:
    """Flag images whose nearest neighbour is at least NEAR_DUPLICATE_THRESHOLD similar.

    The flag points to that neighbour, and the neighbour, if it has no flag of its own, gets
    one pointing back: a pair is listed together whichever of the two was embedded first.
    An image no longer that close to anything loses its flag. Returns how many are flagged.
    """
    from .identity import model_identity
    from .selectors import images_similar_to

    identity = model_identity()
    threshold = settings.NEAR_DUPLICATE_THRESHOLD
    flagged = 0
    for image in Image.objects.filter(pk__in=list(image_ids)).order_by("pk"):
        nearest = images_similar_to(image=image, k=1, identity=identity)
        if nearest and nearest[0].similarity >= threshold:
            neighbour, similarity = nearest[0].image, nearest[0].similarity
            Image.objects.filter(pk=image.pk).update(
                near_duplicate_of=neighbour, near_duplicate_similarity=similarity
            )
            Image.objects.filter(pk=neighbour.pk, near_duplicate_of__isnull=True).update(
                near_duplicate_of=image, near_duplicate_similarity=similarity
            )
            flagged += 1
        elif image.near_duplicate_of_id is not None:
            Image.objects.filter(pk=image.pk).update(near_duplicate_of=None, near_duplicate_similarity=None)
    return flagged
