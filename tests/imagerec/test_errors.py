"""The errors Django answers itself, before or after any view: JSON under /api/, the site's pages elsewhere."""

import pytest
from django.test import Client

from gallery import selectors

pytestmark = pytest.mark.django_db

ERROR_SHAPE_KEYS = {"status", "message", "fields"}


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == ERROR_SHAPE_KEYS and error["status"] == status and error["fields"] == {}
    return error


def assert_site_page(response, status: int) -> None:
    assert response.status_code == status and response["Content-Type"].startswith("text/html")


def test_an_unknown_url_is_a_json_404_under_the_api_and_the_sites_page_elsewhere(client):
    assert_json_error(client.get("/api/no-such-thing/"), 404)

    page = client.get("/no/such/page/")
    assert_site_page(page, 404)
    assert 'class="site-header"' in page.content.decode()


def test_a_nul_byte_is_a_json_400_under_the_api_and_a_page_elsewhere(client):
    # Refused by the middleware before any view: Django's 400 handler answers.
    assert_json_error(client.get("/api/images/?tag=%00"), 400)
    assert_site_page(client.get("/?tag=%00"), 400)


def test_an_unknown_host_under_the_api_is_a_json_400(client):
    assert_json_error(client.get("/api/images/", HTTP_HOST="images.evil.example"), 400)


def test_a_crash_under_the_api_is_a_json_500_that_names_nothing_of_it(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "image_list", broken)
    client = Client(raise_request_exception=False)

    error = assert_json_error(client.get("/api/images/"), 500)
    assert error["message"] == "Server error."

    assert_site_page(client.get("/"), 500)


def test_a_body_too_large_for_the_api_answers_in_the_same_shape(client, settings):
    settings.REQUEST_MAX_BYTES = 10
    response = client.patch("/api/images/1/", data=b"x" * 11, content_type="application/json")
    error = assert_json_error(response, 413)
    assert "larger than" in error["message"]
