"""Recording never costs a visitor a page: with Redis down or the buffer full, events are
dropped and counted in /metrics, and every page and redirect still answers."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from clicks.recording import SHOWN_HEADER
from tests.clicks.helpers import buffer, visitor  # noqa: F401
from tests.observability.helpers import scrape, value

pytestmark = pytest.mark.django_db

LOST = "imagerec_click_events_lost_total"


def lost(samples, kind: str) -> float:
    return value(samples, LOST, kind=kind)


@pytest.mark.urls("tests.clicks.urls")
def test_with_redis_down_pages_and_redirects_answer_and_the_lost_events_are_counted(buffer, image_factory, settings):
    source, target = image_factory(1), image_factory(2)
    before = scrape(Client())
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}

    page = visitor().get(reverse("shown", args=[source.pk]) + f"?list={target.pk}:visual")
    followed = visitor().get(reverse("clicks:choice", args=[source.pk, 1, "visual", target.pk]))
    image_page = visitor().get(reverse("gallery:image-detail", args=[source.pk]))

    assert page.status_code == 200 and SHOWN_HEADER not in page
    assert followed.status_code == 302 and followed["Location"] == reverse("gallery:image-detail", args=[target.pk])
    assert image_page.status_code == 200
    after = scrape(Client())
    assert lost(after, "impression") == lost(before, "impression") + 1
    assert lost(after, "choice") == lost(before, "choice") + 1


def test_a_full_buffer_drops_new_events_and_counts_them(buffer, settings):
    settings.CLICKS_BUFFER_MAX = 3
    before = scrape(Client())
    clicker = visitor()
    for target in range(10, 15):
        assert clicker.get(reverse("clicks:choice", args=[1, 1, "visual", target])).status_code == 302
    assert buffer.length() == 3
    assert buffer.head(10)[-1].endswith("|12|single")  # the first three kept, the later ones dropped
    assert lost(scrape(Client()), "choice") == lost(before, "choice") + 2
