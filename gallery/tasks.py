"""Celery tasks: interfaces that take ids, call one service, and own the retry and time-limit policy.

Names are explicit and stable: ``gallery.pipeline`` sends them by name, and the settings
route each to its queue.
"""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from similarity.weights import WeightsUnavailable

from . import embedding, pipeline, renditions

logger = logging.getLogger(__name__)

# Connection trouble passes; retry with capped exponential backoff and jitter.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError)
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 10,
}


@shared_task(
    name=pipeline.EMBED_TASK,
    bind=True,
    # A stuck batch is stopped; the soft limit lets the service fail what it claimed first.
    soft_time_limit=settings.EMBEDDING_SOFT_TIME_LIMIT,
    time_limit=settings.EMBEDDING_TIME_LIMIT,
    **RETRY_POLICY,
)
def images_embed(self, image_ids: list[int]) -> dict:
    """Embed these images (and other waiting ones, up to a claim)."""
    # The limit in force: the message's own, if its sender set one, else this task's.
    soft_limit = (self.request.timelimit or (None, None))[1] or self.soft_time_limit
    try:
        result = embedding.images_embed(
            image_ids=image_ids,
            give_up_on=SoftTimeLimitExceeded,
            give_up_reason=f"Embedding took longer than the {soft_limit:g}-second limit.",
        )
    except WeightsUnavailable as error:
        # A configuration problem, not the images': they wait, unharmed, for the fix.
        logger.error("Images %s stay pending: %s", image_ids, error)
        return {"pending": image_ids}
    return result.as_dict()


@shared_task(
    name=pipeline.RENDITIONS_TASK,
    soft_time_limit=settings.RENDITIONS_SOFT_TIME_LIMIT,
    time_limit=settings.RENDITIONS_SOFT_TIME_LIMIT + 30,
    **RETRY_POLICY,
)
def renditions_create(image_ids: list[int]) -> dict:
    """Make the thumbnails these images lack (nothing, when they have them all)."""
    return renditions.renditions_create_for(image_ids=image_ids)


@shared_task(name=pipeline.SWEEP_TASK, soft_time_limit=60, time_limit=90, autoretry_for=TRANSIENT_ERRORS, max_retries=3)
def images_sweep() -> dict:
    """Send again the work a lost message, a broker outage or a dead worker left undone."""
    return pipeline.images_sweep()
