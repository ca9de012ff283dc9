"""Celery tasks: interfaces that take ids, call one service, and own the retry and time-limit policy.

Names are explicit and stable: ``gallery.pipeline`` sends them by name, and the settings
route each to its queue. The embedding task is similarity's (``similarity.tasks``).
"""

from celery import shared_task
from django.conf import settings

# One retry policy for every task of the site: the embedding task's.
from similarity.tasks import RETRY_POLICY, TRANSIENT_ERRORS

from . import pipeline, renditions


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
