"""Near-duplicates: an image almost the same as its nearest neighbour is flagged in the admin."""

import pytest
from django.urls import reverse

from gallery.models import Image
from gallery.services import near_duplicates_mark
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:gallery_image_changelist")


@pytest.fixture
def pair_and_stranger(image_factory):
    """An original, a copy whose vector is 0.995 similar, and an unrelated image."""
    original = image_factory(1, vector=unit_vector(1, 0))
    copy = image_factory(2, vector=unit_vector(1, 0.1))
    stranger = image_factory(3, vector=unit_vector(0.2, 1))
    return original, copy, stranger


def test_a_close_neighbour_flags_both_images_of_the_pair(pair_and_stranger):
    original, copy, stranger = pair_and_stranger
    assert near_duplicates_mark(image_ids=[copy.pk, stranger.pk]) == 1
    for image in (original, copy, stranger):
        image.refresh_from_db()
    assert copy.near_duplicate_of == original
    assert copy.near_duplicate_similarity == pytest.approx(0.995, abs=1e-3)
    assert original.near_duplicate_of == copy  # listed together, whichever came first
    assert stranger.near_duplicate_of is None and stranger.near_duplicate_similarity is None


def test_the_threshold_is_a_setting(pair_and_stranger, settings):
    original, copy, _ = pair_and_stranger
    settings.NEAR_DUPLICATE_THRESHOLD = 0.999
    assert near_duplicates_mark(image_ids=[copy.pk]) == 0
    assert not Image.objects.possible_duplicates().exists()


def test_a_flag_that_no_longer_holds_is_cleared(pair_and_stranger, settings):
    original, copy, _ = pair_and_stranger
    near_duplicates_mark(image_ids=[copy.pk])
    settings.NEAR_DUPLICATE_THRESHOLD = 0.999  # e.g. recomputed with other weights
    near_duplicates_mark(image_ids=[copy.pk])
    copy.refresh_from_db()
    assert copy.near_duplicate_of is None


def test_deleting_one_of_the_pair_unflags_the_other(pair_and_stranger):
    original, copy, _ = pair_and_stranger
    near_duplicates_mark(image_ids=[copy.pk])
    copy.delete()
    original.refresh_from_db()
    assert original.near_duplicate_of is None


def test_an_image_without_an_embedding_is_left_alone(image_factory):
    waiting = image_factory(1)
    image_factory(2, vector=unit_vector(1))
    assert near_duplicates_mark(image_ids=[waiting.pk]) == 0


def test_admin_lists_possible_duplicates_with_a_link_and_a_filter(staff_client, pair_and_stranger):
    original, copy, stranger = pair_and_stranger
    near_duplicates_mark(image_ids=[copy.pk])

    html = staff_client.get(LIST_URL).content.decode()
    link = reverse("admin:gallery_image_change", args=[original.pk])
    assert f'possible duplicate of <a href="{link}">{original.pk}</a> (similarity 0.995)' in html
    assert "possible duplicates" in html  # the filter's title

    flagged = staff_client.get(LIST_URL + "?possible_duplicate=yes").context["cl"].result_list
    assert set(flagged) == {original, copy}
    unflagged = staff_client.get(LIST_URL + "?possible_duplicate=no").context["cl"].result_list
    assert list(unflagged) == [stranger]

    page = staff_client.get(reverse("admin:gallery_image_change", args=[copy.pk])).content.decode()
    assert f'possible duplicate of <a href="{link}">{original.pk}</a>' in page


@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_a_batch_costs_the_same_statements_whatever_its_size(image_factory, batch_size, django_assert_num_queries):
    """The worker checks each batch as it is stored: three statements (the nearest-neighbour
    query, the batch's flags, the pointers back), not a query per image."""
    images = [image_factory(seed, vector=unit_vector(1, seed / 1000)) for seed in range(batch_size + 1)]
    batch = [image.pk for image in images[1:]]
    with django_assert_num_queries(3 + 2):  # and a savepoint, as the test runs in a transaction
        flagged = near_duplicates_mark(image_ids=batch)
    assert flagged == batch_size
    assert Image.objects.filter(pk__in=batch, near_duplicate_of__isnull=False).count() == batch_size


def test_a_batch_gets_the_flags_image_by_image_checks_gave(image_factory):
    """Two pairs and a stranger in one batch: each image points at its own nearest neighbour,
    and an image outside the batch points back to the lowest id that found it."""
    first = image_factory(1, vector=unit_vector(1, 0))
    first_copies = [image_factory(2, vector=unit_vector(1, 0.05)), image_factory(3, vector=unit_vector(1, -0.12))]
    second = image_factory(4, vector=unit_vector(0, 1))
    second_copy = image_factory(5, vector=unit_vector(0.08, 1))
    stranger = image_factory(6, vector=unit_vector(0, 0, 1))
    stale = image_factory(7, vector=unit_vector(0, 0, 0, 1))
    Image.objects.filter(pk=stale.pk).update(near_duplicate_of=first, near_duplicate_similarity=0.99)

    batch = [copy.pk for copy in first_copies] + [second_copy.pk, stranger.pk, stale.pk]
    assert near_duplicates_mark(image_ids=batch) == 3

    flags = dict(Image.objects.values_list("pk", "near_duplicate_of"))
    assert flags[first_copies[0].pk] == first.pk and flags[first_copies[1].pk] == first.pk
    assert flags[first.pk] == first_copies[0].pk  # the lowest id of the batch that found it
    assert flags[second_copy.pk] == second.pk and flags[second.pk] == second_copy.pk
    assert flags[stranger.pk] is None and flags[stale.pk] is None
