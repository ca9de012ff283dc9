"""Visitors, the event buffer and a page that names its list, for the recording tests."""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.test import Client

from clicks.recording import event_buffer
from clicks.services import events_flush

# A current desktop browser, as it names itself.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

_addresses = itertools.count(1)


def visitor(**headers) -> Client:
    """A browser of its own: a fresh address each, so rate limits from other tests never apply."""
    number = next(_addresses) + (uuid.uuid4().int % 50_000) * 256
    address = f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"
    return Client(**{"REMOTE_ADDR": address, "HTTP_USER_AGENT": BROWSER, **headers})


@pytest.fixture
def buffer():
    """The session's event buffer, empty at the start and at the end of the test."""
    events = event_buffer()
    events.client.delete(events.key)
    yield events
    events.client.delete(events.key)


def flush():
    result = events_flush()
    assert not result.busy and not result.unavailable, result
    return result


def pair_days():
    """Every stored daily count, as (source, target, variant, position, impressions, choices)."""
    from clicks.models import PairDay

    return sorted(
        PairDay.objects.values_list("source_id", "target_id", "variant", "position", "impressions", "choices")
    )
