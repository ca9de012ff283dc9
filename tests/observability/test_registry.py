"""What an app registers reaches /readyz and /metrics, without observability importing the app."""

import pytest
from django.db import DatabaseError

from observability import registry

from .helpers import readyz, scrape, value


@pytest.fixture
def clean_registry(monkeypatch):
    """The registrations made here vanish after the test; the apps' own stay."""
    monkeypatch.setattr(registry, "_readiness_checks", dict(registry._readiness_checks))
    monkeypatch.setattr(registry, "_gauges", dict(registry._gauges))


@pytest.mark.django_db
def test_a_check_reading_through_one_registered_later_waits_for_its_answer(client, clean_registry):
    tried = []

    def queue_check():
        tried.append("queue")
        return {"ok": True}

    def queue_server_check():
        return {"ok": False, "error": "unreachable"}

    registry.readiness_check_register("queue", queue_check, reads_through="queue_server")
    registry.readiness_check_register("queue_server", queue_server_check)

    status, body = readyz(client)

    assert status == 503
    assert body["down"][-2:] == ["queue", "queue_server"]
    assert body["checks"]["queue"] == {"ok": False, "error": "unknown: the queue_server is unreachable"}
    assert tried == []


@pytest.mark.django_db
def test_a_registered_gauge_is_scraped_and_one_that_cannot_read_the_database_is_left_out(client, clean_registry):
    def broken():
        raise DatabaseError("relation does not exist")

    registry.gauge_register("test_things", documentation="Things by colour.", label="colour", collect=lambda: {"red": 3})
    registry.gauge_register("test_broken", documentation="Never read.", label="kind", collect=broken)

    samples = scrape(client)

    assert value(samples, "test_things", colour="red") == 3
    assert not any(name == "test_broken" for name, _ in samples)
    # The apps' own gauges still answer.
    assert any(name == "imagerec_images" for name, _ in samples)
