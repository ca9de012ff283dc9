"""Probes: /healthz, /readyz."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import health


@never_cache
@require_safe
def healthz(request):
    """Liveness: this process answers. Nothing else is checked, so a restart is never the cure
    for an outage elsewhere."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request):
    """200 when the database, broker, a worker and the backlog are fine; 503 naming what is not."""
    ready, body = health.readiness()
    return JsonResponse(body, status=200 if ready else 503)

