"""Celery tasks of the vector engine: ids or data in, one call, the retry and time-limit policy."""

import base64
import logging
import os

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import compute, embedding, pipeline
from .weights import WeightsUnavailable

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
    except RuntimeError as error:
        if compute.device_fault(error) != "broken":
            raise
        # A failed CUDA context stays broken for the rest of the process: end this pool process
        # (the claim is already released, no attempt counted) so that Celery starts a fresh one.
        logger.critical("Pool process %d stops: its GPU failed (%s)", os.getpid(), error)
        raise SystemExit(1) from error
    return result.as_dict()


@shared_task(
    name="similarity.query_embed",
    # The visitor's page waits for this result (the one task whose result is kept).
    ignore_result=False,
    # A search is one picture's network pixels: if it takes longer, the page has long given up.
    soft_time_limit=20,
    time_limit=30,
)
def query_embed(pixels: str) -> dict:
    """The vector of a visitor's picture (base64 of its network pixels, see search.query_pixels), and the model."""
    identity, vector = compute.embedding_of_picture(base64.b64decode(pixels))
    return {"identity": identity, "vector": [float(value) for value in vector]}
