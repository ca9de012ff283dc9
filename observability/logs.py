"""Log records that say which request or which images they are about, as text or JSON.

``LOGGING`` in the settings puts ``ContextFilter`` on the console handler and chooses the
formatter with ``LOG_FORMAT``: ``PlainFormatter`` for people, python-json-logger's
``JsonFormatter`` for log collectors (every ``extra=`` field becomes a JSON field).
"""

from __future__ import annotations

import ast
import logging
import re

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http.multipartparser import MultiPartParserError

from . import context, registry


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``image_ids`` from the current context to every record.

    A record that names its own images (``extra={"image_ids": [...]}``) keeps them: a line
    about one image of a batch says which one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = context.request_id.get()
            if request_id is not None:
                record.request_id = request_id
        if not hasattr(record, "image_ids"):
            image_ids = context.image_ids.get() or _task_images(getattr(record, "data", None))
            if image_ids is not None:
                record.image_ids = list(image_ids)
        return True


# What a client's request causes and Django answers with a 4xx: a scanner sends thousands. Each
# is one warning line, its message naming the cause, never a traceback.
CLIENT_ERRORS = (BadRequest, PermissionDenied, SuspiciousOperation, MultiPartParserError)


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class ClientErrorFilter(logging.Filter):
    """A record about a client's error loses its traceback and becomes one escaped warning line.

    Django logs these with ``exc_info`` (and SuspiciousOperation, DisallowedHost,
    RequestDataTooBig, TooManyFieldsSent... at ERROR, on ``django.security.*``); they are
    answered 4xx and are no fault of the site's. Their messages quote the request (its path,
    its Host header), so control characters are escaped: one request, one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exception = record.exc_info[1] if record.exc_info else None
        if isinstance(exception, CLIENT_ERRORS):
            record.msg = CONTROL_CHARACTERS.sub(_escaped, record.getMessage())
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.error = type(exception).__name__
        return True


class AccessLogFilter(logging.Filter):
    """gunicorn's access log lines get ``request_id`` (from the response's X-Request-ID) as a field."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args if isinstance(record.args, dict) else {}
        request_id = atoms.get("{x-request-id}o")
        if request_id and request_id != "-":
            record.request_id = request_id
        return True


def _task_images(data) -> list[int] | None:
    """The images of a Celery task named in a worker's "Task ... received" line.

    That line is logged by the worker's main process before the task runs anywhere, so no
    context holds its images yet; Celery passes the task's name and arguments (as text) in
    ``extra={"data": ...}``.
    """
    if not isinstance(data, dict) or data.get("name") not in registry.image_tasks():
        return None
    try:
        args = ast.literal_eval(data.get("args") or "")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None  # a long argument list is shortened with "...", which does not parse
    if isinstance(args, list | tuple) and args and isinstance(args[0], list | tuple):
        return [image_id for image_id in args[0] if isinstance(image_id, int)]
    return None


class PlainFormatter(logging.Formatter):
    """The usual one-line format, followed by the request id and image ids when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        about = []
        if getattr(record, "request_id", None):
            about.append(f"request_id={record.request_id}")
        if getattr(record, "image_ids", None):
            about.append(f"image_ids={','.join(map(str, record.image_ids))}")
        if not about:
            return line
        # After the first line, so a traceback below it stays readable.
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(about)}]{newline}{rest}"
