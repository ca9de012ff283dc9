"""Celery tasks: interfaces that take ids, call one service, and own the retry and time-limit policy.

Names are explicit and stable: ``gallery.pipeline`` sends them by name, and the settings
route each to its queue. The embedding task is similarity's (``similarity.tasks``).
"""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

# One retry policy for every task of the site: the embedding task's.
from similarity.tasks import RETRY_POLICY, TRANSIENT_ERRORS

from . import pipeline, renditions, services
from .models import ArchiveUpload


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


@shared_task(
    bind=True,
    name=pipeline.ARCHIVE_UPLOAD_EXPAND_TASK,
    # A run hands what is left to a fresh one after ARCHIVE_RUN_SECONDS; the limits are for a
    # member or an extraction that never ends. Both stay under the broker's visibility timeout.
    soft_time_limit=settings.ARCHIVE_RUN_SECONDS + 240,
    time_limit=settings.ARCHIVE_RUN_SECONDS + 300,
    **RETRY_POLICY,
)
def archive_upload_expand(self, archive_id: int) -> dict:
    """Add the images of an archive sent to the upload API; safe to run again (acks_late)."""
    too_long = "Expanding the archive took longer than the worker's time limits allow."
    try:
        archive = services.archive_upload_expand(archive_id=archive_id, seconds=settings.ARCHIVE_RUN_SECONDS)
    except SoftTimeLimitExceeded:
        archive = services.archive_upload_finish(archive_id=archive_id, state=ArchiveUpload.State.FAILED, error=too_long)
    if archive is None:
        return {"archive_id": archive_id, "state": "missing"}
    if not archive.is_finished:
        if self.request.retries >= self.max_retries:
            services.archive_upload_finish(archive_id=archive_id, state=ArchiveUpload.State.FAILED, error=too_long)
            return {"archive_id": archive_id, "state": ArchiveUpload.State.FAILED}
        # What is left goes to a fresh run, in a new message: the counts say where this one stopped.
        raise self.retry(countdown=0)
    return {"archive_id": archive_id, "state": archive.state, "added": archive.added, "refused": archive.refused}
