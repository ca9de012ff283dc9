"""Celery tasks: thin wrappers that take ids, call a service, and own the retry policy."""

import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from gallery.models import Image

from . import services, worker  # noqa: F401  (worker: the pool processes' start-up hooks)
from .identity import WeightsUnavailable

logger = logging.getLogger(__name__)

# Connection trouble passes; retry with capped exponential backoff and jitter.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError)


@shared_task(
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=10,
)
def embed_images(image_ids: list[int]) -> dict:
    """Embed these images (and other waiting ones, up to a batch)."""
    try:
        started = time.perf_counter()
        result = services.embeddings_compute(image_ids=image_ids)
        computed = time.perf_counter()
        services.near_duplicates_mark(image_ids=result.ready)
        if result.ready:
            times = result.timings
            logger.info(
                "Embedded %d image(s) in %.3fs: claim %.3fs, decode %.3fs (threads' CPU %.3fs), "
                "forward %.3fs, store %.3fs, near-duplicates %.3fs",
                len(result.ready), time.perf_counter() - started, times["claim"], times["decode"],
                times["decode_cpu"], times["forward"], times["store"], time.perf_counter() - computed,
            )
    except SoftTimeLimitExceeded:
        reason = f"Embedding took longer than the {settings.CELERY_TASK_SOFT_TIME_LIMIT}-second limit."
        services.images_mark_failed(failures={image_id: reason for image_id in image_ids})
        logger.error("Soft time limit hit for images %s", image_ids)
        return {"failed": image_ids}
    except WeightsUnavailable as error:
        # A configuration problem, not the images': they wait, unharmed, for the fix.
        services.images_mark_pending(images=Image.objects.filter(pk__in=image_ids).processing())
        logger.error("Images %s stay pending: %s", image_ids, error)
        return {"pending": image_ids}
    if result.failed:
        logger.warning("Images failed: %s", result.failed)
    return {"ready": result.ready, "failed": list(result.failed), "skipped": result.skipped}


@shared_task(autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=3)
def sweep_images() -> int:
    """Re-queue images left pending or processing too long."""
    swept = services.embeddings_sweep()
    if swept:
        logger.info("Re-queued %d image(s) waiting for an embedding", swept)
    return swept
