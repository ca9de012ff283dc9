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
