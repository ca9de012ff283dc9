"""Embedding work: asked for once an image's row commits, and swept up when lost.

The one place that sends the embedding task, and the sweeper of what a lost message, a
broker outage or a killed worker left undone. Tasks are sent by name (``send_task``): this
module imports neither the worker's code nor torch, so the web process stays light, and the
settings' routes send the task to the embedding workers' queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from imagerec.celery import app

from . import lifecycle

logger = logging.getLogger(__name__)

EMBED_TASK = "similarity.images_embed"
# Explicit None: the message carries no time limits, so the worker applies its own settings'
# (a sender that has the task registered would otherwise stamp its own into the message).
# ignore_result: nobody waits for these results, so sending never touches the result backend.
WORKERS_OWN_LIMITS = {"time_limit": None, "soft_time_limit": None, "ignore_result": True}


def embeddings_publish(*, image_ids: Iterable[int]) -> bool:
    """Send the work now. False when the broker is unreachable: the sweeper sends it later."""
    image_ids = list(image_ids)
    try:
        for start in range(0, len(image_ids), max(1, settings.EMBEDDING_BATCH_SIZE)):
            app.send_task(EMBED_TASK, args=[image_ids[start : start + settings.EMBEDDING_BATCH_SIZE]], **WORKERS_OWN_LIMITS)
    except Exception:
        logger.warning(
            "Broker unavailable: embeddings of %d image(s) wait for the sweeper",
            len(image_ids),
            exc_info=True,
            extra={"image_ids": image_ids},
        )
        return False
    return True


def embeddings_request(*, image_ids: Iterable[int], enqueue: bool = True) -> int:
    """Make these images pending for the configured model; with ``enqueue``, send the work once
    the current transaction commits (never for rows that were rolled back).

    For a new image, a recompute and a retry alike; returns how many. Without ``enqueue`` the
    sweeper sends the work after EMBEDDING_SWEEP_PENDING_AFTER.
    """
    image_ids = list(image_ids)
    with transaction.atomic():
        count = lifecycle.images_mark_pending(image_ids=image_ids)
        if enqueue and image_ids:
            transaction.on_commit(lambda: embeddings_publish(image_ids=image_ids))
    return count


def embeddings_sweep() -> list[int]:
    """Send again the embeddings of stuck images; returns their ids."""
    image_ids = lifecycle.images_requeue_stuck()
    if image_ids:
        embeddings_publish(image_ids=image_ids)
    return image_ids
