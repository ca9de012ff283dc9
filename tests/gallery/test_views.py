"""What a visitor sees: the gallery, an image's page and its similar images."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from gallery.models import Image
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def detail_url(image, **query):
    url = reverse("gallery:image-detail", args=[image.pk])
    return url + ("?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else "")


@pytest.fixture
def fourteen_images(image_factory, settings):
    settings.GALLERY_PAGE_SIZE = 12
    return [image_factory(seed) for seed in range(14)]


def test_gallery_shows_newest_first_twelve_per_page(client, fourteen_images):
    response = client.get("/")
    assert response.status_code == 200
    shown = list(response.context["images"])
    assert len(shown) == 12
    assert shown[0] == fourteen_images[-1]
    html = response.content.decode()
    assert fourteen_images[-1].caption in html
    assert detail_url(fourteen_images[-1]) in html
    assert "Page 1 of 2" in html and "?page=2" in html

    second = client.get("/?page=2")
    assert list(second.context["images"]) == [fourteen_images[1], fourteen_images[0]]


@pytest.mark.parametrize("page", ["3", "999", "-1"])
def test_out_of_range_page_shows_the_last_page(client, fourteen_images, page):
    response = client.get(f"/?page={page}")
    assert response.status_code == 200
    assert response.context["page_obj"].number == 2


def test_garbage_page_number_is_not_an_error(client, fourteen_images):
    response = client.get("/?page=abc")
    assert response.status_code == 200
    assert response.context["page_obj"].number == 1


def test_home_is_the_gallery(client, fourteen_images):
    response = client.get("/home")
    assert response.status_code == 200
    assert len(response.context["images"]) == 12


def test_empty_gallery_says_so(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "No images yet" in response.content.decode()


def test_detail_lists_neighbours_most_similar_first_with_scores(client, image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0))
    near = image_factory(2, vector=unit_vector(1, 0.2))
    far = image_factory(3, vector=unit_vector(0.2, 1))
    response = client.get(detail_url(chosen))
    assert response.status_code == 200
    similar = response.context["similar_images"]
    assert [item.image for item in similar] == [near, far]
    assert all(0 <= item.similarity <= 1 for item in similar)
    html = response.content.decode()
    # cos(near) = 1/sqrt(1.04) = 0.98; cos(far) = 0.2/sqrt(1.04) = 0.20
    assert ">0.98<" in html and ">0.20<" in html
    assert html.index(near.caption) < html.index(far.caption)
    # Each link counts the choice (clicks.views), then leads to the neighbour's page.
    link = reverse("clicks:choice", args=[chosen.pk, 1, response.context["comparison"], similar[0].variant, near.pk])
    assert f'href="{link}"' in html
    assert client.get(link)["Location"] == detail_url(near)


def test_an_identical_vector_scores_one(client, image_factory):
    chosen = image_factory(1, vector=unit_vector(0.3, 0.4))
    twin = image_factory(2, vector=unit_vector(0.3, 0.4))
    similar = client.get(detail_url(chosen)).context["similar_images"]
    assert similar[0].image == twin
    assert similar[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_k_defaults_to_the_setting_and_accepts_1_to_50(client, image_factory, settings):
    settings.RECOMMENDATIONS_K = 6
    chosen = image_factory(0, vector=unit_vector(1))
    for seed in range(1, 10):
        image_factory(seed, vector=unit_vector(1, seed / 10))
    assert len(client.get(detail_url(chosen)).context["similar_images"]) == 6
    assert len(client.get(detail_url(chosen, k=3)).context["similar_images"]) == 3
    assert len(client.get(detail_url(chosen, k=50)).context["similar_images"]) == 9
    for ignored in ["0", "51", "-2", "abc", ""]:
        response = client.get(detail_url(chosen, k=ignored))
        assert response.status_code == 200
        assert len(response.context["similar_images"]) == 6, ignored


def test_pending_image_says_finding_similar_images(client, image_factory):
    image_factory(1, vector=unit_vector(1))
    waiting = image_factory(2)
    response = client.get(detail_url(waiting))
    assert response.status_code == 200
    assert "Finding similar images…" in response.content.decode()
    assert response.context["similar_images"] == []


def test_failed_image_says_it_could_not_be_processed(client, image_factory):
    broken = image_factory(1, status=Image.Status.FAILED, embedding_error="The image cannot be decoded.")
    html = client.get(detail_url(broken)).content.decode()
    assert "could not be processed" in html
    assert "The image cannot be decoded." in html


def test_unknown_image_is_a_404_page(client):
    response = client.get("/images/999999/")
    assert response.status_code == 404
    assert "Not found" in response.content.decode()


def test_recommendation_page_query_count_does_not_depend_on_k(client, image_factory):
    chosen = image_factory(0, vector=unit_vector(1))
    for seed in range(1, 25):
        image_factory(seed, vector=unit_vector(1, seed / 10, seed % 3))
    counts = {}
    for k in (1, 6, 20):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(detail_url(chosen, k=k))
        assert len(response.context["similar_images"]) == k
        counts[k] = len(queries)
    assert counts[1] == counts[6] == counts[20], counts
    # The image, its tags, the neighbours (one index scan), the evidence of visitors'
    # choices, and all their thumbnails.
    assert counts[1] <= 5, counts


def test_recommend_redirects_by_original_file_name(client, image_factory):
    image = image_factory(7)
    response = client.get(f"/recommend?selectedImage={image.original_name}")
    assert response.status_code == 302  # temporary: another upload may take the name
    assert response["Location"] == detail_url(image)


@pytest.mark.parametrize("query", ["?selectedImage=nope.jpg", "", "?selectedImage="])
def test_recommend_with_an_unknown_name_is_a_404_page(client, query):
    response = client.get(f"/recommend{query}")
    assert response.status_code == 404
    assert "Not found" in response.content.decode()


def test_random_weights_banner_on_every_page(client, image_factory, settings):
    image = image_factory(1)
    settings.EMBEDDING_WEIGHTS = "random"
    for url in ["/", detail_url(image)]:
        assert "Demo mode" in client.get(url).content.decode()
    settings.EMBEDDING_WEIGHTS = "imagenet"
    assert "Demo mode" not in client.get("/").content.decode()
