"""The worker's part of an image's lifecycle: claim, embed, store, tell who listens (near-duplicates).

``images_embed`` is what the embedding task and ``manage.py embed_images`` call. It cleans
up exactly what it claimed: on a give-up signal (the task's soft time limit) its unfinished
images fail with the reason; on any other interruption they go back to pending. Images it
did not claim, another worker's among them, are never touched. It holds its claim on each
image's row (``lifecycle.claims_end``) until that image is stored, failed or released, on every path.

``embedding_progress`` tells listeners (metrics, the scale-out tests' counter of forward
passes) what this process claimed, passed through the network and stored, as it happens.

Worker-side code: it reaches the encoder (and so torch) through ``similarity.compute``.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.dispatch import Signal

from observability.registry import embedding_recorded
from . import lifecycle
from .compute import batch_size as device_batch_size
from .compute import device_fault, embeddings_compute
from .services import embeddings_store
from .signals import images_embedded
from .weights import WeightsUnavailable, model_identity

logger = logging.getLogger(__name__)

# Interruptions that are not the images' fault do not count towards giving up on them; nor
# do the GPU's own failures (out of memory, a broken CUDA context: ``compute.device_fault``).
NOT_THE_IMAGES_FAULT = (WeightsUnavailable, OperationalError, InterfaceError, ConnectionError)
# The most images one claim takes, however fast the worker: its ids travel in one statement
# and it holds an advisory lock per row.
MAX_CLAIM_IMAGES = 16_384
STEPS = ("claim", "decode", "forward", "store", "decode_cpu", "duplicates")

# Sent with ``stage`` ("claimed", "forwarded" or "stored") and ``image_ids``.
embedding_progress = Signal()


class Throughput:
    """This process's recent rate: images per second over its last batches, store included."""

    def __init__(self, batches: int = 16):
        self._recent = collections.deque(maxlen=batches)

    def record(self, *, images: int, seconds: float) -> None:
        if images and seconds > 0:
            self._recent.append((images, seconds))

    def rate(self) -> float | None:
        """Images per second, or None before the first batch."""
        seconds = sum(seconds for _, seconds in self._recent)
        return sum(images for images, _ in self._recent) / seconds if seconds else None


# The rate this process measured, which sizes its next claim.
process_throughput = Throughput()


def claim_size(*, batch_size: int, rate: float | None) -> int:
    """Images one claim should take: EMBEDDING_CLAIM_SECONDS of work at ``rate``, in whole batches.

    At least EMBEDDING_CLAIM_BATCHES batches (the size before the rate is known, or with
    EMBEDDING_CLAIM_SECONDS=0), at most MAX_CLAIM_IMAGES, and never more than a quarter of
    the task's soft time limit's work, so a claim ends well inside it.
    """
    floor = batch_size * max(1, settings.EMBEDDING_CLAIM_BATCHES)
    seconds = min(settings.EMBEDDING_CLAIM_SECONDS, settings.EMBEDDING_SOFT_TIME_LIMIT / 4)
    if not rate or seconds <= 0:
        return floor
    batches = int(rate * seconds) // batch_size
    return max(floor, min(batches * batch_size, MAX_CLAIM_IMAGES))


@dataclass
class EmbedResult:
    ready: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)  # named, but done, failed, or another worker's
    # Seconds spent on each step in the calling thread; decode_cpu: the decode threads' CPU time.
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    def as_dict(self) -> dict:
        return {"ready": self.ready, "failed": self.failed, "skipped": self.skipped, "timings": self.timings}


def images_embed(
    *,
    image_ids: list[int],
    fill_batch: bool = True,
    give_up_on: type[BaseException] | tuple[type[BaseException], ...] = (),
    give_up_reason: str = "",
    throughput: Throughput | None = None,
) -> EmbedResult:
    """Embed the given images (with ``fill_batch``, other waiting ones too) and store the vectors.

    With ``fill_batch`` one call claims, when the queue is deep, EMBEDDING_CLAIM_SECONDS of
    work at the rate ``throughput`` (this process's) measured, and at least
    EMBEDDING_CLAIM_BATCHES batches (of EMBEDDING_BATCH_SIZE, or EMBEDDING_CUDA_BATCH_SIZE
    on a GPU), so later tasks find their images done (``claim_size``). Each batch is
    stored, and its images become ready, as soon as it is through the network.
    """
    result = EmbedResult()
    timings = result.timings
    throughput = throughput or process_throughput
    batch_size = device_batch_size()
    fill_to = max(claim_size(batch_size=batch_size, rate=throughput.rate()), len(image_ids)) if fill_batch else 0
    started = time.perf_counter()
    identity = model_identity()  # missing weights: nothing claimed, the images wait unharmed
    claim = lifecycle.images_claim(image_ids=image_ids, fill_to=fill_to, identity=identity)
    timings["claim"] = time.perf_counter() - started
    result.skipped, result.failed = claim.skipped, dict(claim.gave_up)
    outstanding = {job.image_id for job in claim.jobs}
    if not outstanding:
        return result
    embedding_progress.send(sender=images_embed, stage="claimed", image_ids=sorted(outstanding))
    try:
        sources = [
            (job.image_id, functools.partial(job.image.file.storage.open, job.image.file.name, "rb"))
            for job in claim.jobs
        ]
        batch_started = time.perf_counter()
        for batch in embeddings_compute(sources=sources, batch_size=batch_size):
            embedding_progress.send(sender=images_embed, stage="forwarded", image_ids=list(batch.vectors))
            stored_at = time.perf_counter()
            if batch.failures:
                lifecycle.images_mark_failed(failures=batch.failures, identity=identity)
                result.failed.update(batch.failures)
            if batch.vectors:
                with transaction.atomic():
                    embeddings_store(vectors_by_image=batch.vectors, identity=identity)
                    lifecycle.images_mark_ready(image_ids=batch.vectors, identity=identity)
                result.ready.extend(batch.vectors)
                embedding_progress.send(sender=images_embed, stage="stored", image_ids=list(batch.vectors))
            done = set(batch.vectors) | set(batch.failures)
            outstanding -= done
            lifecycle.claims_end(job_ids=[claim.job_ids[image_id] for image_id in done])
            timings["decode"] += batch.decode_wait
            timings["decode_cpu"] += batch.decode_cpu
            timings["forward"] += batch.forward
            timings["store"] += time.perf_counter() - stored_at
            # Batch to batch: the wait for decoding and the network, the store, and the last
            # batch's near-duplicate check, which is what one more image costs this worker.
            batch_ended = time.perf_counter()
            throughput.record(images=len(done), seconds=batch_ended - batch_started)
            batch_started = batch_ended
            if batch.vectors:
                # Batch by batch, while the next batches decode: one nearest-neighbour query
                # per image costs a GPU worker about as much as decoding it, and checked once
                # per claim it would leave the decoder idle between claims.
                marked_at = time.perf_counter()
                images_embedded.send(sender=images_embed, image_ids=list(batch.vectors), identity=identity)
                timings["duplicates"] += time.perf_counter() - marked_at
    except give_up_on:
        failures = dict.fromkeys(outstanding, give_up_reason)
        lifecycle.images_mark_failed(failures=failures, identity=identity)
        result.failed.update(failures)
        logger.error("Gave up on %d image(s): %s", len(failures), give_up_reason, extra={"image_ids": sorted(failures)})
        embedding_recorded(ready=len(result.ready), failed=len(result.failed), timings=timings)
        return result
    except BaseException as error:
        theirs = not isinstance(error, NOT_THE_IMAGES_FAULT) and device_fault(error) is None
        _release(outstanding, count_attempt=theirs, identity=identity)
        raise
    finally:
        # After the statuses above are written: an image let go while still "processing"
        # could be taken by another worker and then released under it by this one.
        lifecycle.claims_end(job_ids=[claim.job_ids[image_id] for image_id in outstanding])
    logger.info(
        "Embedded %d image(s), %d failed",
        len(result.ready),
        len(result.failed),
        extra={"image_ids": result.ready, "failed": result.failed, "timings": timings},
    )
    embedding_recorded(ready=len(result.ready), failed=len(result.failed), timings=timings)
    return result


def images_embed_in_batches(
    *, image_ids: list[int], batch_size: int, progress: Callable[[int], None] | None = None
) -> EmbedResult:
    """Embed these images in this process, batch after batch (``embed_images`` without --queue).

    They are marked pending first, so pages say they are being worked on; ``progress`` is told
    how many images each batch covered. Fails with WeightsUnavailable before any row is
    touched when the weights are missing.
    """
    from .encoders.registry import get_encoder

    get_encoder()
    identity = model_identity()
    lifecycle.images_mark_pending(image_ids=image_ids)
    total = EmbedResult()
    for start in range(0, len(image_ids), batch_size):
        chunk = image_ids[start : start + batch_size]
        result = images_embed(image_ids=chunk, fill_batch=False)
        total.ready += result.ready
        total.failed.update(result.failed)
        total.skipped += result.skipped
        for step, seconds in result.timings.items():
            total.timings[step] += seconds
        if progress is not None:
            progress(len(chunk))
    logger.info("Embedded %d image(s) with %s in this process", len(total.ready), identity)
    return total


def _release(image_ids: set[int], *, count_attempt: bool, identity: str) -> None:
    if not image_ids:
        return
    try:
        lifecycle.images_release(image_ids=image_ids, count_attempt=count_attempt, identity=identity)
    except (OperationalError, InterfaceError):
        # The database is away: the sweeper frees them once it is back.
        logger.warning(
            "Could not release %d claimed image(s); the sweeper will", len(image_ids), extra={"image_ids": sorted(image_ids)}
        )
