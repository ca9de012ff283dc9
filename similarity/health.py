"""What the embedding pipeline tells /readyz: whether the images waiting for an embedding are too many.

Registered with observability in ``SimilarityConfig.ready``.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connection

from observability.registry import Check

from .models import EmbeddingJob
from .selectors import embedding_status_counts

logger = logging.getLogger(__name__)


def backlog_check() -> Check:
    """The images pending or processing, at most READYZ_BACKLOG_MAX."""
    limit = settings.READYZ_BACKLOG_MAX
    try:
        counts = embedding_status_counts()
    except DatabaseError as error:
        # The database answers (its own check passed) but the images cannot be counted:
        # migrations not applied, permissions.
        logger.warning("Readiness: the images cannot be counted: %s", error)
        connection.close()
        return {"ok": False, "error": "the images cannot be counted", "max": limit}
    waiting = counts[EmbeddingJob.Status.PENDING] + counts[EmbeddingJob.Status.PROCESSING]
    check = {"ok": waiting <= limit, "waiting": waiting, "max": limit}
    if waiting > limit:
        check["error"] = f"{waiting} images wait for an embedding (more than {limit})"
    return check
