"""Celery tasks for the gallery: thin wrappers that take ids and call a service."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services

logger = logging.getLogger(__name__)

# Connection trouble passes; retry with capped exponential backoff and jitter.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError)


@shared_task(autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=120, retry_jitter=True, max_retries=10)
def create_renditions(image_ids: list[int]) -> dict:
    """Make the thumbnails these images lack (nothing, when they have them all)."""
    return services.images_renditions_create(image_ids=image_ids)


@shared_task(autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=3)
def sweep_renditions() -> int:
    """Queue ready images still without thumbnails (a lost message, a broker outage)."""
    swept = services.renditions_sweep()
    if swept:
        logger.info("Queued renditions for %d image(s) that still lacked them", swept)
    return swept
