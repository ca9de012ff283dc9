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


def test_nearest_neighbours_of_a_batch_in_one_query(image_factory, django_assert_num_queries):
    from similarity.selectors import nearest_neighbours_of
    from similarity.weights import model_identity

    chosen = image_factory(0, vector=unit_vector(1, 0))
    near = image_factory(1, vector=unit_vector(1, 0.1))
    far = image_factory(2, vector=unit_vector(0, 1))
    waiting = image_factory(3)
    with django_assert_num_queries(1):
        found = nearest_neighbours_of(image_ids=[chosen.pk, far.pk, waiting.pk], identity=model_identity())
    assert set(found) == {chosen.pk, far.pk}  # no vector, no neighbour
    assert found[chosen.pk][0] == near.pk and found[chosen.pk][1] == pytest.approx(0.995, abs=0.002)
    assert found[far.pk][0] == near.pk and found[far.pk][1] == pytest.approx(0.0995, abs=0.002)


def test_the_batch_query_can_walk_the_hnsw_index(image_factory):
    """Each image's lookup orders by the index's own expression (halfvec cosine distance to the
    image's vector), so PostgreSQL can answer it from the HNSW index instead of reading every row."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from similarity.selectors import nearest_neighbours_of
    from similarity.weights import model_identity

    images = [image_factory(seed, vector=unit_vector(1, seed / 10)) for seed in range(3)]
    with CaptureQueriesContext(connection) as queries:
        nearest_neighbours_of(image_ids=[image.pk for image in images], identity=model_identity())
    with transaction.atomic(), connection.cursor() as cursor:
        # A table this small is cheaper read whole and sorted: rule that out, as a large one does.
        for method in ("seqscan", "bitmapscan", "sort"):
            cursor.execute(f"SET LOCAL enable_{method} = off")
        cursor.execute("EXPLAIN " + queries[0]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using similarity_embedding_hnsw" in plan, plan
