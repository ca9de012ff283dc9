"""Celery signal receivers: logs, metrics and the heartbeat of worker processes.

Connected in ``ObservabilityConfig.ready``; Celery sends these only inside a worker (and
``setup_logging`` only when a Celery program starts), so web processes merely hold them.
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings

from . import context, metrics, registry, workers

logger = logging.getLogger(__name__)

_started: dict[str, tuple[float, object]] = {}
_heartbeat: workers.Heartbeat | None = None


def keep_django_logging(**kwargs) -> None:
    """setup_logging: Celery leaves logging as Django's LOGGING set it (JSON when asked).

    Without a receiver Celery replaces the root handlers with its own plain-text ones.
    """


def task_started(sender=None, task_id=None, task=None, args=None, **kwargs) -> None:
    token = None
    if task is not None and task.name in registry.image_tasks() and args and isinstance(args[0], list | tuple):
        token = context.image_ids_bind(args[0])
    _started[task_id] = (time.perf_counter(), token)


def task_finished(sender=None, task_id=None, task=None, state=None, **kwargs) -> None:
    started, token = _started.pop(task_id, (None, None))
    try:
        if task is not None and started is not None:
            outcome = (state or "unknown").lower()
            metrics.task_recorded(task=task.name, outcome=outcome, seconds=time.perf_counter() - started)
            _snapshot_store(worker=task.request.hostname or "unknown")
    finally:
        if token is not None:
            context.image_ids.reset(token)


def _snapshot_store(*, worker: str) -> None:
    try:
        workers.metrics_snapshot_store(worker=worker, snapshot=metrics.snapshot())
    except (redis.RedisError, OSError) as error:
        # Nothing is lost: the next task stores the whole snapshot again.
        logger.warning("Could not store this process's metrics: %s", error)


def heartbeat_start(sender=None, **kwargs) -> None:
    """worker_ready (the worker's main process): beat until the worker shuts down."""
    global _heartbeat
    worker = getattr(sender, "hostname", None) or "unknown"
    _heartbeat = workers.Heartbeat(worker=worker, interval=settings.WORKER_HEARTBEAT_INTERVAL)
    _heartbeat.start()


def heartbeat_stop(**kwargs) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
