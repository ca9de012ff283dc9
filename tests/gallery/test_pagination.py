"""Gallery pages: the count read once per cache generation, deep pages read by their ids."""

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gallery import pagination
from gallery.pagination import CountOncePaginator
from gallery.selectors import image_list
from gallery.services import image_update

pytestmark = pytest.mark.django_db


def ids(page) -> list[int]:
    return [image.pk for image in page.object_list]


def test_deep_pages_show_the_same_images_as_plain_offsets(image_factory, monkeypatch):
    images = [image_factory(seed) for seed in range(11)]
    image_update(image=images[4], tag_names=["harbour"])
    image_update(image=images[7], tag_names=["harbour"])
    monkeypatch.setattr(pagination, "DEFERRED_FROM", 3)  # every page but the first by its ids
    for rows in (image_list(), images[0].__class__.objects.filter(tags__slug="harbour").newest_first()):
        plain, deferred = Paginator(rows, 3), CountOncePaginator(rows, 3)
        assert deferred.num_pages == plain.num_pages
        for number in plain.page_range:
            assert ids(deferred.page(number)) == ids(plain.page(number)), number


def test_the_count_is_read_once_until_the_gallery_changes(image_factory):
    images = [image_factory(seed) for seed in range(5)]
    assert CountOncePaginator(image_list(), 2).count == 5
    with CaptureQueriesContext(connection) as queries:
        assert CountOncePaginator(image_list(), 2).count == 5
    assert len(queries) == 0
    images[0].delete()
    assert CountOncePaginator(image_list(), 2).count == 4
