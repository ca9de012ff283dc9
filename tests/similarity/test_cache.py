"""Recommendation lists come from Redis, and change the moment the collection does.

The lists on their own, under the whole pages (tests/gallery/test_invalidation.py): a page the
page cache no longer holds (a caption edited) ranks its neighbours from here.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from similarity.selectors import images_similar_to
from similarity.services import embeddings_store
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def similar(client, image) -> list:
    return [item.image for item in images_similar_to(image=image, k=10)]


def distance_queries(queries) -> list[str]:
    return [query["sql"] for query in queries.captured_queries if "<=>" in query["sql"]]


def test_a_repeated_page_is_answered_from_the_cache(client, image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0))
    image_factory(2, vector=unit_vector(1, 0.2))

    with CaptureQueriesContext(connection) as first:
        similar(client, chosen)
    with CaptureQueriesContext(connection) as second:
        similar(client, chosen)

    assert len(distance_queries(first)) == 1
    assert distance_queries(second) == []  # the ranking came from Redis
    assert len(second) <= len(first)


def test_a_new_upload_appears_in_its_neighbours_lists_and_a_deleted_image_disappears(client, image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0))
    far = image_factory(2, vector=unit_vector(0.2, 1))
    assert similar(client, chosen) == [far]  # now cached

    newcomer = image_factory(3)
    embeddings_store(vectors_by_image={newcomer.pk: unit_vector(1, 0.1)}, identity="resnet18/random-seed0")
    assert similar(client, chosen) == [newcomer, far]

    embeddings_store(vectors_by_image={newcomer.pk: unit_vector(0, 1)}, identity="resnet18/random-seed0")
    assert similar(client, chosen) == [far, newcomer]  # re-embedded: it moves down

    far.delete()
    assert similar(client, chosen) == [newcomer]
