"""Celery signal receivers: the logging and the heartbeat of worker processes.

Connected in ``ObservabilityConfig.ready``; Celery sends these only inside a worker (and
``setup_logging`` only when a Celery program starts), so web processes merely hold them.
"""

from __future__ import annotations

from django.conf import settings

from . import context, workers

_bound: dict[str, object] = {}
_heartbeat: workers.Heartbeat | None = None


def keep_django_logging(**kwargs) -> None:
    """setup_logging: Celery leaves logging as Django's LOGGING set it (JSON when asked).

    Without a receiver Celery replaces the root handlers with its own plain-text ones.
    """


def task_started(sender=None, task_id=None, task=None, args=None, **kwargs) -> None:
    if task is not None and task.name in context.IMAGE_TASKS and args and isinstance(args[0], list | tuple):
        _bound[task_id] = context.image_ids_bind(args[0])


def task_finished(sender=None, task_id=None, task=None, **kwargs) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        context.image_ids.reset(token)


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
