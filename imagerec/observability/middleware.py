"""Web middleware: a request id for every request."""

from __future__ import annotations

import re
import uuid

from . import context

HEADER = "X-Request-ID"
# What proxies and platforms send (UUIDs, hex digests, "Root=1-..."-like tokens); anything
# else (spaces, control characters, very long values) could forge or break log lines.
ACCEPTED = re.compile(r"[A-Za-z0-9._:=+/@-]{1,200}")


def request_id_for(incoming: str | None) -> str:
    if incoming and ACCEPTED.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Every request gets an id: the caller's ``X-Request-ID`` when it is sensible, a new one.

    Binds the id to every log record of the request and returns it in ``X-Request-ID``.

    First in ``MIDDLEWARE``, so the other middleware's log lines carry it too. gunicorn's
    access log reads it back from the response header.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_for(request.headers.get(HEADER))
        # Left bound on the way out: Django logs a 4xx or 5xx response ("Not Found: ...")
        # after the middleware has returned it. request_finished unbinds it (apps.py).
        context.request_id.set(request.request_id)
        response = self.get_response(request)
        response[HEADER] = request.request_id
        return response

