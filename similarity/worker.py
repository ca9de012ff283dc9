"""Celery worker hooks: each pool process loads the network once, before its first task.

Without them the first upload after a worker (re)start would wait for the weights to load
and for the first forward pass to set itself up. Connected in ``SimilarityConfig.ready``;
the signals only fire inside a ``celery worker``.
"""

from __future__ import annotations

import logging
import os

from .checks import weights_problem
from .weights import WeightsUnavailable

logger = logging.getLogger(__name__)

# The worker's --concurrency, read in the main process; its pool processes inherit it.
_pool_processes = 1


def refuse_to_start_without_weights(sender=None, **kwargs) -> None:
    """worker_init: remember the pool size; load the network once (downloading if allowed), or stop."""
    global _pool_processes
    concurrency = getattr(sender, "concurrency", None)
    _pool_processes = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1
    if weights_problem() is None:
        return
    from .encoders.registry import get_encoder

    try:
        # On the CPU whatever EMBEDDING_DEVICE says: CUDA must first start in the pool
        # processes this one forks, since it does not survive a fork.
        get_encoder(device="cpu")
    except WeightsUnavailable as error:
        logger.critical("The worker cannot start: %s", error)
        raise SystemExit(1) from None


def load_encoder(**kwargs) -> None:
    """worker_process_init: load the network in a new pool process and run it once at the sizes it will see."""
    from .compute import batch_size
    from .encoders import base
    from .encoders.registry import get_encoder

    # The pool processes split the CPUs: torch and decode threads are sized to one share.
    base.pool_processes = _pool_processes
    try:
        get_encoder().warm_up(batch_sizes=(1, batch_size()))
    except WeightsUnavailable as error:
        # Missing weights, or a GPU that is not there: each task leaves its images pending.
        logger.critical("Pool process %d cannot embed: %s", os.getpid(), error)
    except Exception:
        # The first task reports the problem (missing weights, say) the same way again.
        logger.exception("Could not load the encoder in pool process %d", os.getpid())
