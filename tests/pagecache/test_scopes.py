"""Dropping only the pages whose URL names one object (``pages_drop(pk=...)``)."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pagecache.store import pages_drop
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def queries_for(url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert Client().get(url).status_code == 200
    return len(queries)


def test_only_the_pages_naming_the_object_are_computed_again(image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0))
    other = image_factory(2, vector=unit_vector(1, 0.2))
    pages = {
        "chosen": reverse("gallery:image-detail", args=[chosen.pk]),
        "chosen json": reverse("gallery:api-similar", args=[chosen.pk]),
        "other": reverse("gallery:image-detail", args=[other.pk]),
        "gallery": reverse("gallery:image-list"),
    }
    for url in pages.values():
        queries_for(url)
        assert queries_for(url) == 0  # kept

    pages_drop(pk=chosen.pk)

    assert queries_for(pages["chosen"]) > 0 and queries_for(pages["chosen json"]) > 0
    assert queries_for(pages["other"]) == 0 and queries_for(pages["gallery"]) == 0
    assert queries_for(pages["chosen"]) == 0  # kept again under the new version


def test_a_dropped_page_is_not_revalidated_by_its_old_etag(image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0))
    url = reverse("gallery:image-detail", args=[chosen.pk])
    first = Client().get(url)
    assert Client().get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    pages_drop(pk=chosen.pk)
    with CaptureQueriesContext(connection) as queries:
        again = Client().get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert len(queries) > 0  # computed again; the same bytes may still answer 304
    assert again.status_code in (200, 304)


def test_dropping_pages_with_redis_down_fails_nothing(settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"},
    }
    pages_drop(pk=1)
