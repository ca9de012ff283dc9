"""Probes and the Prometheus scrape: /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from . import health, metrics, registry, workers

logger = logging.getLogger(__name__)


@never_cache
@require_safe
def healthz(request):
    """Liveness: this process answers. Nothing else is checked, so a restart is never the cure
    for an outage elsewhere."""
    return JsonResponse({"status": "ok"})


def bearer_of_metrics_token(request) -> bool:
    """Whether the request may read the site's internals: METRICS_TOKEN is unset, or it carries it."""
    token = settings.METRICS_TOKEN
    return not token or constant_time_compare(request.headers.get("Authorization", ""), f"Bearer {token}")


@never_cache
@require_safe
def readyz(request):
    """200 when the database, broker, a worker and the backlog are fine; 503 naming what is not.

    What is down, and the numbers behind it, only to the bearer of METRICS_TOKEN: to anyone
    else a failing check would say which server to go after. The status code is for everyone.
    """
    ready, body = health.readiness()
    if not bearer_of_metrics_token(request):
        body = {"status": body["status"]}
    return JsonResponse(body, status=200 if ready else 503)


@never_cache
@require_safe
def metrics_export(request):
    """This site's metrics in Prometheus's text format: requests, the backlog, every worker."""
    if not bearer_of_metrics_token(request):
        response = HttpResponse("A bearer token is required for /metrics.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    if settings.PROMETHEUS_MULTIPROC_DIR:
        # Every gunicorn process's counts, whichever one answers the scrape.
        web = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(web, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        web = REGISTRY
    registry.register(WebCollector(web))
    registry.register(SiteCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class WebCollector:
    """This web server's own metrics; the workers' families come from their snapshots only
    (a worker sharing the multiprocess folder would otherwise be counted twice)."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        for family in self.source.collect():
            if family.name not in metrics.WORKER_FAMILIES:
                yield family


class SiteCollector:
    """Read at each scrape: the apps' gauges (images by status...), the workers from Redis.

    A server that is down leaves its families out (and says so in the log), so the scrape
    still shows the web's own metrics during the outage.
    """

    def collect(self):
        for name, gauge in registry.gauges().items():
            try:
                values = gauge.collect()
            except DatabaseError as error:
                logger.warning("Metrics: %s left out: %s", name, error)
                connection.close()
                continue
            family = GaugeMetricFamily(name, gauge.documentation, labels=[gauge.label])
            for label_value, number in values.items():
                family.add_metric([label_value], number)
            yield family
        try:
            ages = workers.heartbeat_ages()
            snapshots = workers.metrics_snapshots()
        except (redis.RedisError, OSError) as error:
            logger.warning("Metrics: workers left out, the broker is unreachable: %s", error)
            return
        heartbeats = GaugeMetricFamily(
            "imagerec_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat.", labels=["worker"]
        )
        for worker, age in sorted(ages.items()):
            heartbeats.add_metric([worker], age)
        yield heartbeats
        yield from metrics.worker_families(snapshots)
