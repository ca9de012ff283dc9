"""Celery signal receivers: the logging of worker processes.

Connected in ``ObservabilityConfig.ready``; Celery sends these only inside a worker (and
``setup_logging`` only when a Celery program starts), so web processes merely hold them.
"""

from __future__ import annotations

from . import context

_bound: dict[str, object] = {}


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
