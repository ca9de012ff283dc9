"""What a log line is about: the request being answered, the images being processed.

Context variables, so each thread and each asyncio task sees only its own (a thread
started inside a request or a task starts with none: pass ids explicitly there).
``observability.logs.ContextFilter`` puts them on every log record; nothing here imports
Django or Celery.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
image_ids: ContextVar[tuple[int, ...] | None] = ContextVar("image_ids", default=None)

def request_id_clear(**kwargs) -> None:
    """request_finished: the thread's next log lines belong to no request."""
    request_id.set(None)


def image_ids_bind(ids: Iterable[int]):
    """Bind until ``image_ids.reset(token)``; for Celery's separate prerun and postrun signals."""
    return image_ids.set(tuple(ids))
