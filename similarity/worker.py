"""Celery worker hooks: each pool process loads the network once, before its first task.

Without them the first upload after a worker (re)start would wait for the weights to load
and for the first forward pass to set itself up. Connected by importing this module from
``similarity.tasks``; the hooks only fire inside a ``celery worker``.
"""

from __future__ import annotations

import logging
import os

from celery import signals
from django.conf import settings

logger = logging.getLogger(__name__)

# The worker's --concurrency, read in the main process; its pool processes inherit it.
_pool_processes = 1


@signals.worker_init.connect
def remember_pool_size(sender=None, **kwargs) -> None:
    global _pool_processes
    concurrency = getattr(sender, "concurrency", None)
    _pool_processes = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1


@signals.worker_process_init.connect
def load_encoder(**kwargs) -> None:
    """Load the network in a new pool process and run it once at the sizes it will see."""
    from . import encoder

    # The pool processes split the CPUs: torch and decode threads are sized to one share.
    encoder.pool_processes = _pool_processes
    try:
        encoder.get_encoder().warm_up(batch_sizes=(1, settings.EMBEDDING_BATCH_SIZE))
    except Exception:
        # The first task reports the problem (missing weights, say) the same way again.
        logger.exception("Could not load the encoder in pool process %d", os.getpid())
