"""Storing vectors: one per image and model, safe to repeat, older models' vectors replaced."""

import numpy as np
import pytest

from similarity.models import Embedding
from similarity.services import embeddings_store
from similarity.serving import serving_identity
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def test_storing_again_replaces_the_vector_instead_of_adding_one(image_factory):
    image = image_factory(1)
    embeddings_store(vectors_by_image={image.pk: unit_vector(1, 0)}, identity="resnet18/test")
    embeddings_store(vectors_by_image={image.pk: unit_vector(0, 1)}, identity="resnet18/test")

    stored = Embedding.objects.get(image=image)
    assert stored.model_identity == "resnet18/test"
    np.testing.assert_allclose(np.asarray(stored.vector[:2], dtype=float), [0, 1])


def test_a_new_models_vector_joins_the_older_one_and_the_first_pins_the_served_model(image_factory):
    image, other = image_factory(1), image_factory(2)
    embeddings_store(vectors_by_image={image.pk: unit_vector(1), other.pk: unit_vector(1)}, identity="resnet18/old")

    embeddings_store(vectors_by_image={image.pk: unit_vector(1)}, identity="resnet18/new")

    assert sorted(image.embeddings.values_list("model_identity", flat=True)) == ["resnet18/new", "resnet18/old"]
    assert list(other.embeddings.values_list("model_identity", flat=True)) == ["resnet18/old"]
    assert serving_identity() == "resnet18/old"  # a new model's vectors do not switch the site


def test_stored_vectors_are_the_computed_ones_rounded_to_half_precision(image_factory):
    """The text the store sends is shorter than pgvector's adapter's, but every value lands on
    the same half-precision number: ordinary features, tiny and subnormal ones, large ones."""
    rng = np.random.default_rng(7)
    vectors = {
        image_factory(seed).pk: np.abs(rng.standard_normal(512)).astype(np.float32) * scale
        for seed, scale in enumerate([1 / 22, 1e-6, 3e-8, 1000.0])
    }
    embeddings_store(vectors_by_image=vectors, identity="resnet18/test")

    for image_id, vector in vectors.items():
        stored = np.asarray(Embedding.objects.get(image_id=image_id).vector, dtype=np.float32).astype(np.float16)
        np.testing.assert_array_equal(stored, vector.astype(np.float16))
