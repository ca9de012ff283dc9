"""Diverse recommendations: near-copies of one picture give way to other kinds of picture."""

import numpy as np
import pytest
from django.urls import reverse

from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def near_copies(base: np.ndarray, count: int, seed: int, spread: float = 0.02) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    copies = []
    for _ in range(count):
        vector = base + rng.normal(0, spread, base.shape).astype(np.float32) * (base != 0)
        copies.append(vector / np.linalg.norm(vector))
    return copies


@pytest.fixture
def groups_of_near_copies(image_factory):
    """A chosen image and four groups of four near-copies each, less and less like it."""
    chosen = image_factory(0, vector=unit_vector(1, 0, 0, 0, 0))
    group_of = {}
    seed = 1
    for group, direction in enumerate([(1, 0.3), (1, 0, 0.6), (1, 0, 0, 0.9), (1, 0, 0, 0, 1.2)]):
        for vector in near_copies(unit_vector(*direction), 4, seed=group):
            group_of[image_factory(seed, vector=vector).pk] = group
            seed += 1
    return chosen, group_of


def groups_shown(client, chosen, group_of, query: str) -> list[int]:
    response = client.get(reverse("gallery:image-detail", args=[chosen.pk]) + query)
    return [group_of[item.image.pk] for item in response.context["similar_images"]]


def test_the_diverse_list_covers_more_groups_than_the_plain_one(client, groups_of_near_copies, settings):
    chosen, group_of = groups_of_near_copies
    settings.DIVERSITY_WEIGHT = 0.5

    plain = groups_shown(client, chosen, group_of, "?k=4")
    diverse = groups_shown(client, chosen, group_of, "?k=4&diverse=1")

    assert plain == [0, 0, 0, 0]  # the four near-copies closest to the chosen image
    assert diverse[0] == 0  # the best match still comes first
    assert len(set(diverse)) >= 3 > len(set(plain))


def test_weight_one_is_the_plain_ranking_and_the_setting_turns_it_on_for_every_page(
    client, groups_of_near_copies, settings
):
    chosen, group_of = groups_of_near_copies
    settings.DIVERSITY_WEIGHT = 1.0
    assert groups_shown(client, chosen, group_of, "?k=4&diverse=1") == groups_shown(client, chosen, group_of, "?k=4")

    settings.DIVERSITY_WEIGHT = 0.5
    settings.DIVERSITY_DEFAULT = True
    assert len(set(groups_shown(client, chosen, group_of, "?k=4"))) >= 3
    assert groups_shown(client, chosen, group_of, "?k=4&diverse=0") == [0, 0, 0, 0]
