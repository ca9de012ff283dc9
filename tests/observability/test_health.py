"""/healthz and /readyz with real servers stopped and started, and a real worker killed.

The servers are the tests' embedded PostgreSQL and Redis, stopped and started as the fault
tests do (tests/similarity/test_faults.py); the worker is a `celery worker` process.
"""

import pytest
from django.conf import settings
from django.db import connections

from devtools import services
from similarity.models import EmbeddingJob
from tests.conftest import unit_vector, wait_for

from .helpers import readyz

# The worker beats twice a second and /readyz wants a beat from the last 3 seconds, so a
# dead worker shows within seconds instead of a minute.
QUICK_HEARTBEAT = {"WORKER_HEARTBEAT_INTERVAL": "0.5"}

_embedded = services.services_urls(settings.TEST_DATA_DIR)
needs_embedded_redis = pytest.mark.skipif(
    _embedded.get("CELERY_BROKER_URL") != settings.CELERY_BROKER_URL, reason="stops and starts the embedded Redis"
)
needs_embedded_postgres = pytest.mark.skipif(
    _embedded.get("DATABASE_URL") != settings.DATABASE_URL, reason="stops and starts the embedded PostgreSQL"
)


@pytest.fixture(autouse=True)
def quick_heartbeat_age(settings):
    settings.WORKER_HEARTBEAT_MAX_AGE = 3


def wait_until_ready(client, timeout=60):
    return wait_for(lambda: readyz(client)[0] == 200, timeout=timeout, interval=0.2, message="/readyz to answer 200")


@pytest.mark.end_to_end
def test_ready_while_a_worker_beats_and_unavailable_once_it_is_killed(client, start_worker):
    worker = start_worker(extra_env=QUICK_HEARTBEAT)

    wait_until_ready(client)
    status, body = readyz(client)
    assert status == 200
    assert body["status"] == "ok"
    assert body["down"] == []
    assert body["checks"]["worker"]["workers"] == 1
    assert body["checks"]["backlog"] == {"ok": True, "waiting": 0, "max": settings.READYZ_BACKLOG_MAX}

    worker.kill()

    wait_for(lambda: readyz(client)[0] == 503, timeout=15, interval=0.2, message="/readyz to notice the dead worker")
    status, body = readyz(client)
    assert body["status"] == "unavailable"
    assert body["down"] == ["worker"]
    assert body["checks"]["worker"]["error"] == "no worker heartbeat in the last 3 seconds"
    assert client.get("/healthz").status_code == 200


@needs_embedded_redis
@pytest.mark.end_to_end
def test_a_stopped_broker_is_named_and_readiness_returns_with_it(client, start_worker):
    start_worker(extra_env=QUICK_HEARTBEAT)
    wait_until_ready(client)

    services.redis_stop(settings.TEST_DATA_DIR)
    try:
        status, body = readyz(client)
        # Liveness does not depend on the broker: restarting the web would not bring it back.
        healthz = client.get("/healthz")
    finally:
        services.redis_start(settings.TEST_DATA_DIR)

    assert status == 503
    assert body["down"] == ["broker", "worker"]
    assert body["checks"]["broker"] == {"ok": False, "error": "unreachable"}
    assert body["checks"]["worker"] == {"ok": False, "error": "unknown: the broker is unreachable"}
    assert healthz.status_code == 200
    assert healthz.json() == {"status": "ok"}
    # The same worker beats again once the broker is back.
    wait_until_ready(client, timeout=30)


@needs_embedded_postgres
@pytest.mark.django_db(transaction=True)
def test_a_stopped_database_is_named_and_readiness_returns_with_it(client):
    connections.close_all()
    services.postgres_stop(settings.TEST_DATA_DIR)
    try:
        status, body = readyz(client)
        healthz = client.get("/healthz")
    finally:
        services.postgres_start(settings.TEST_DATA_DIR)
        connections.close_all()

    assert status == 503
    # No worker runs in this test, so the worker check fails too, and says why.
    assert body["down"] == ["database", "worker", "backlog"]
    assert body["checks"]["database"] == {"ok": False, "error": "unreachable"}
    assert body["checks"]["backlog"] == {"ok": False, "error": "unknown: the database is unreachable"}
    assert body["checks"]["broker"] == {"ok": True}
    assert healthz.status_code == 200

    status, body = readyz(client)
    assert body["down"] == ["worker"]
    assert body["checks"]["database"] == {"ok": True}


@pytest.mark.django_db
def test_a_backlog_over_the_limit_is_named(client, image_factory, settings):
    settings.READYZ_BACKLOG_MAX = 2
    waiting = [image_factory(seed) for seed in range(3)]
    image_factory(3, vector=unit_vector(1, 0))  # ready: not waiting

    status, body = readyz(client)

    assert status == 503
    assert "backlog" in body["down"]
    assert body["checks"]["backlog"] == {
        "ok": False,
        "waiting": 3,
        "max": 2,
        "error": "3 images wait for an embedding (more than 2)",
    }

    EmbeddingJob.objects.filter(image_id=waiting[0].pk).update(status=EmbeddingJob.Status.FAILED)
    status, body = readyz(client)
    assert "backlog" not in body["down"]
    assert body["checks"]["backlog"] == {"ok": True, "waiting": 2, "max": 2}


@pytest.mark.django_db
def test_probes_refuse_other_methods_without_an_error(client):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.post(path).status_code == 405


TOKEN = "a-long-random-readiness-token"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}", f"bearer  {TOKEN}"],
)
def test_without_the_token_readyz_answers_its_status_alone(client, settings, authorization):
    settings.METRICS_TOKEN = TOKEN
    settings.READYZ_BACKLOG_MAX = -1  # so the backlog check fails, whatever else does
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}

    response = client.get("/readyz", **headers)

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}
    for check in ("database", "broker", "worker", "backlog"):
        assert check.encode() not in response.content


@pytest.mark.django_db
def test_the_bearer_of_the_token_learns_what_is_down(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.READYZ_BACKLOG_MAX = -1

    response = client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 503
    body = response.json()
    assert "backlog" in body["down"]
    assert body["checks"]["backlog"] == {
        "ok": False, "waiting": 0, "max": -1, "error": "0 images wait for an embedding (more than -1)"
    }
