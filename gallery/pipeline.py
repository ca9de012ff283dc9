"""Follow-up work for images: published once their rows commit, and swept up when lost.

Every image needs two kinds of follow-up work, an embedding and its renditions. The
embedding is similarity's (``similarity.pipeline`` sends it and sweeps it up); this module
sends the renditions, and its sweeper runs both sweeps, so that one periodic task finds what a
lost message, a broker outage or a killed worker left undone.

Tasks are sent by name (``send_task``): this module imports neither the worker's code nor
torch, so the web process stays light, and the settings' routes decide which queue, and so
which pool of workers, gets each kind of work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imagerec.celery import app

from similarity.pipeline import WORKERS_OWN_LIMITS, embeddings_publish, embeddings_sweep

from .models import ArchiveUpload, Image

logger = logging.getLogger(__name__)

RENDITIONS_TASK = "gallery.renditions_create"
SWEEP_TASK = "gallery.images_sweep"
# Routed to the default queue (settings.celery_queues).
ARCHIVE_UPLOAD_EXPAND_TASK = "gallery.archive_upload_expand"
# Renditions are quick (tens of milliseconds each); a batch keeps the message count low.
RENDITIONS_PER_TASK = 50


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def images_follow_up_publish(*, image_ids: Iterable[int], embeddings: bool = True, renditions: bool = True) -> bool:
    """Send the work now. False when the broker is unreachable: the sweeper sends it later."""
    image_ids = list(image_ids)
    if embeddings and not embeddings_publish(image_ids=image_ids):
        return False
    try:
        if renditions:
            for chunk in _chunks(image_ids, RENDITIONS_PER_TASK):
                app.send_task(RENDITIONS_TASK, args=[chunk], **WORKERS_OWN_LIMITS)
    except Exception:
        logger.warning(
            "Broker unavailable: follow-up work for %d image(s) waits for the sweeper",
            len(image_ids),
            exc_info=True,
            extra={"image_ids": image_ids},
        )
        return False
    return True


def images_follow_up_enqueue(*, image_ids: Iterable[int], embeddings: bool = True, renditions: bool = True) -> None:
    """Publish once the current transaction commits: never for rows that were rolled back."""
    image_ids = list(image_ids)
    if image_ids:
        transaction.on_commit(
            lambda: images_follow_up_publish(image_ids=image_ids, embeddings=embeddings, renditions=renditions)
        )


def archives_sweep() -> list[int]:
    """Send again the archives no worker is expanding: their message was lost, or their task
    gave up on an outage that outlasted its retries.

    A run moves its archive's ``updated_at`` with every member, so an archive untouched for
    longer than a run may last (its hard time limit) has no live run. Each one sent is touched,
    so the next sweep waits as long again before sending it once more; a second run beside a
    late first one is safe (``services.archive_upload_expand`` counts each member once).
    """
    cutoff = timezone.now() - timedelta(seconds=settings.ARCHIVE_RUN_SECONDS + 300 + 60)
    stranded = ArchiveUpload.objects.filter(
        state__in=(ArchiveUpload.State.QUEUED, ArchiveUpload.State.EXPANDING), updated_at__lt=cutoff
    )
    archive_ids = list(stranded.order_by("pk").values_list("pk", flat=True)[:100])
    sent = []
    for archive_id in archive_ids:
        if not archive_upload_send(archive_id=archive_id):
            break  # the broker went away meanwhile: the next sweep tries again
        ArchiveUpload.objects.filter(pk=archive_id).update(updated_at=timezone.now())
        sent.append(archive_id)
    return sent


def archive_upload_send(*, archive_id: int) -> bool:
    """Send an archive upload to a worker to expand; False, logged, when the broker is unreachable."""
    try:
        app.send_task(ARCHIVE_UPLOAD_EXPAND_TASK, args=[archive_id], ignore_result=True)
    except Exception:
        logger.warning("Broker unavailable: archive upload %s was not sent", archive_id, exc_info=True)
        return False
    return True


def images_sweep() -> dict[str, int]:
    """Send again the work that was lost: embeddings of stuck images, renditions still missing,
    archives no worker is expanding.

    Renditions only for ready images a while old: their file has decoded once, so the task
    has a fair chance, and the upload's own task has had time to run.
    """
    archives = archives_sweep()
    embeddings = embeddings_sweep()
    cutoff = timezone.now() - timedelta(seconds=settings.EMBEDDING_SWEEP_PENDING_AFTER)
    renditions = list(
        Image.objects.ready()
        .without_renditions()
        .filter(created_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:5_000]
    )
    if renditions:
        images_follow_up_publish(image_ids=renditions, embeddings=False)
    if embeddings or renditions:
        logger.info(
            "Sweeper queued embeddings for %d and renditions for %d image(s)",
            len(embeddings),
            len(renditions),
            extra={"image_ids": sorted(set(embeddings) | set(renditions))},
        )
    if archives:
        logger.info("Sweeper sent %d archive upload(s) again", len(archives), extra={"archive_ids": archives})
    return {"embeddings": len(embeddings), "renditions": len(renditions), "archives": len(archives)}
