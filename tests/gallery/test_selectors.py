"""The gallery's reads; here the recommendations the image page and the API both show."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gallery import selectors
from gallery.models import Tag
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


@pytest.fixture
def chosen_and_neighbours(image_factory):
    chosen = image_factory(0, vector=unit_vector(1, 0))
    neighbours = [image_factory(seed, vector=unit_vector(1, seed / 10)) for seed in range(1, 13)]
    # As the page and the API have it: with whether it has a vector, read in the same query.
    return selectors.image_get(image_id=chosen.pk), neighbours


def test_recommendations_are_the_nearest_images_without_the_image_itself(chosen_and_neighbours):
    chosen, neighbours = chosen_and_neighbours

    found = selectors.image_recommendations(image=chosen, k=3, diverse=False)

    assert [item.image for item in found] == neighbours[:3]
    assert chosen not in [item.image for item in found]
    assert found[0].similarity >= found[1].similarity >= found[2].similarity


@pytest.mark.parametrize("k", [1, 5, 12])
def test_recommendations_keep_to_k(chosen_and_neighbours, k):
    chosen, _ = chosen_and_neighbours
    assert len(selectors.image_recommendations(image=chosen, k=k)) == k


def test_recommendations_default_to_the_settings(chosen_and_neighbours, settings):
    chosen, _ = chosen_and_neighbours
    settings.RECOMMENDATIONS_K = 4
    assert len(selectors.image_recommendations(image=chosen)) == 4


def test_recommendations_within_a_tag_are_that_tags_images_only(chosen_and_neighbours):
    chosen, neighbours = chosen_and_neighbours
    night = Tag.objects.create(name="night", slug="night")
    tagged = neighbours[5::3]
    for image in tagged:
        image.tags.add(night)

    found = selectors.image_recommendations(image=chosen, k=10, tag=night)

    assert [item.image for item in found] == tagged


def test_an_image_without_a_vector_has_no_recommendations_and_costs_no_query(chosen_and_neighbours, image_factory):
    waiting = selectors.image_get(image_id=image_factory(99).pk)
    assert waiting.has_embedding is False

    with CaptureQueriesContext(connection) as queries:
        assert selectors.image_recommendations(image=waiting, k=5) == []
    # Only its own renditions, for the page's picture.
    assert len(queries) == 1


def test_an_image_not_from_image_get_still_has_none_without_a_vector(chosen_and_neighbours, image_factory):
    assert selectors.image_recommendations(image=image_factory(99), k=5) == []


@pytest.mark.parametrize("diverse", [False, True])
def test_the_number_of_queries_does_not_depend_on_k(chosen_and_neighbours, diverse):
    chosen, _ = chosen_and_neighbours
    counts = {}
    for variant in ("visual", "interleaved"):
        for k in (1, 6, 12):
            with CaptureQueriesContext(connection) as queries:
                found = selectors.image_recommendations(image=chosen, k=k, diverse=diverse, variant=variant)
            assert len(found) == k
            counts[variant, k] = len(queries)
    # The neighbours (one index scan, their images joined), and every rendition in one more;
    # a list that may use visitors' choices reads their evidence for this image too.
    assert counts == {
        ("visual", 1): 2, ("visual", 6): 2, ("visual", 12): 2,
        ("interleaved", 1): 3, ("interleaved", 6): 3, ("interleaved", 12): 3,
    }, counts


def test_the_image_and_its_neighbours_come_with_their_renditions(chosen_and_neighbours):
    chosen, _ = chosen_and_neighbours
    found = selectors.image_recommendations(image=chosen, k=3)

    with CaptureQueriesContext(connection) as queries:
        for image in [chosen, *(item.image for item in found)]:
            list(image.renditions.all())
    assert len(queries) == 0
