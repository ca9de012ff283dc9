import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


@pytest.fixture
def gallery_images(image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0), caption="picture 1")
    near = image_factory(2, vector=unit_vector(1, 0.1), caption="picture 2")
    middle = image_factory(3, vector=unit_vector(1, 1), caption="picture 3")
    far = image_factory(4, vector=unit_vector(0, 1), caption="picture 4")
    return chosen, near, middle, far


def similar_url(image, k=None) -> str:
    url = reverse("gallery:api-similar", args=[image.pk])
    return url if k is None else f"{url}?k={k}"


def test_lists_the_nearest_images_most_similar_first(client, gallery_images):
    chosen, near, middle, far = gallery_images

    response = client.get(similar_url(chosen, k=3))

    assert response.status_code == 200
    body = response.json()
    assert body["image"] == {
        "id": chosen.pk,
        "caption": "picture 1",
        "url": None,  # no display rendition yet (never the original, which keeps camera data)
        "has_embedding": True,
    }
    assert [item["id"] for item in body["similar"]] == [near.pk, middle.pk, far.pk]
    assert body["similar"][0] == {
        "id": near.pk,
        "caption": "picture 2",
        "url": None,
        "similarity": pytest.approx(float(unit_vector(1, 0) @ unit_vector(1, 0.1)), abs=1e-5),
    }
    assert body["similar"][1]["similarity"] == pytest.approx(2**-0.5, abs=1e-5)
    assert body["similar"][2]["similarity"] == pytest.approx(0.0, abs=1e-5)


def test_k_defaults_to_the_setting(client, gallery_images, settings):
    settings.RECOMMENDATIONS_K = 2
    assert len(client.get(similar_url(gallery_images[0], k=1)).json()["similar"]) == 1
    assert len(client.get(similar_url(gallery_images[0])).json()["similar"]) == 2


@pytest.mark.parametrize("k", ["many", "0", "-1", "51", "10000", "1.5"])
def test_a_bad_k_is_a_json_error_naming_the_parameter(client, gallery_images, k):
    response = client.get(similar_url(gallery_images[0], k=k))
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == 400 and set(error["fields"]) == {"k"}


def test_query_count_does_not_grow_with_k(client, gallery_images, image_factory):
    for number in range(5, 30):
        image_factory(number, vector=unit_vector(1, number / 10, 0.5))
    chosen = gallery_images[0]

    with CaptureQueriesContext(connection) as one:
        assert len(client.get(similar_url(chosen, k=1)).json()["similar"]) == 1
    with CaptureQueriesContext(connection) as twenty:
        assert len(client.get(similar_url(chosen, k=20)).json()["similar"]) == 20

    # The image (with whether it has a vector), one index scan ordered by the distance to
    # its vector, read in a subquery, joining the neighbours' images, and their renditions.
    assert len(one) == len(twenty) == 3


def test_an_image_without_a_vector_has_no_neighbours_yet(client, gallery_images, image_factory):
    pending = image_factory(99)

    body = client.get(similar_url(pending)).json()

    assert body["image"]["has_embedding"] is False
    assert body["similar"] == []


def test_unknown_image_is_a_json_404(client):
    response = client.get(reverse("gallery:api-similar", args=[123456]))
    assert response.status_code == 404
    assert response.json() == {"error": {"status": 404, "message": "No image with id 123456.", "fields": {}}}


def test_only_get_is_allowed(client, gallery_images):
    assert client.post(similar_url(gallery_images[0])).status_code == 405
