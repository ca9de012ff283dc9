"""Web middleware: a request id for every request, and its count and latency for /metrics."""

from __future__ import annotations

import functools
import re
import time
import uuid

from prometheus_client import Histogram

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


# Page and JSON views answer in milliseconds; an upload of many photos can take a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@functools.cache
def request_seconds() -> Histogram:
    """Made when the first middleware instance is, not at import (in gunicorn's multiprocess
    mode a metric writes a file as soon as it exists)."""
    return Histogram(
        "imagerec_http_request_duration_seconds",
        "Time to answer a request, by view (URL name), method and status; _count counts them.",
        ["view", "method", "status"],
        buckets=LATENCY_BUCKETS,
    )


class RequestMetricsMiddleware:
    """One observation per request, whatever it ended in (an exception arrives here as its
    500 response). Labels stay few: the URL's name, never its path."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.histogram = request_seconds()

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name if match else None) or "<unmatched>"
        method = request.method if request.method in METHODS else "other"
        self.histogram.labels(view=view, method=method, status=str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response
