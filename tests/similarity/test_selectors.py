"""images_similar_to: nearest first, never the image itself, nothing for an image without a vector."""

import pytest

from similarity.selectors import images_similar_to
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def test_an_image_without_a_vector_has_no_neighbours(image_factory):
    for seed in range(3):
        image_factory(seed, vector=unit_vector(1, seed))
    waiting = image_factory(9)
    assert images_similar_to(image=waiting, k=5) == []


def test_neighbours_come_nearest_first_and_exclude_the_image(image_factory):
    chosen = image_factory(0, vector=unit_vector(1, 0))
    far = image_factory(1, vector=unit_vector(0, 1))
    near = image_factory(2, vector=unit_vector(1, 0.1))
    found = images_similar_to(image=chosen, k=5)
    assert [item.image for item in found] == [near, far]
    assert found[0].similarity == pytest.approx(0.995, abs=0.002)
    assert found[1].similarity == pytest.approx(0.0, abs=0.002)


def test_vectors_from_another_model_are_not_compared(image_factory, settings):
    chosen = image_factory(0, vector=unit_vector(1, 0))
    image_factory(1, vector=unit_vector(1, 0.1))
    settings.EMBEDDING_RANDOM_SEED = 5
    assert images_similar_to(image=chosen, k=5) == []


def test_search_by_a_vector_ranks_as_the_neighbour_query_does(image_factory):
    """Search by photo runs the pages' own builder: a stored image's vector finds it, then its neighbours."""
    from similarity.search import images_similar_to_vector
    from similarity.weights import model_identity

    vectors = [unit_vector(1, seed / 10, seed % 3) for seed in range(8)]
    images = [image_factory(seed, vector=vector) for seed, vector in enumerate(vectors)]
    chosen = images[0]

    found = images_similar_to_vector(vector=vectors[0], identity=model_identity(), k=5)

    assert found[0].image == chosen and found[0].similarity == pytest.approx(1.0, abs=0.002)
    assert [item.image for item in found[1:]] == [item.image for item in images_similar_to(image=chosen, k=4)]
