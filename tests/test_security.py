"""The usual: staff-only admin and uploads, CSRF, host checking, the site's own error pages, no HTML sniffing."""

import pytest
from django.test import Client
from django.urls import reverse

from gallery import selectors
from gallery.models import Image
from gallery.renditions import renditions_create
from tests.conftest import encode, photo_like, upload

pytestmark = pytest.mark.django_db
ADD_URL = reverse("admin:gallery_image_add")


def test_a_signed_in_visitor_who_is_not_staff_cannot_reach_the_admin_or_upload(django_user_model, make_upload):
    visitor = django_user_model.objects.create_user("visitor", password="not-a-real-password")
    client = Client()
    client.force_login(visitor)

    assert client.get("/admin/").status_code == 302
    response = client.post(ADD_URL, {"files": [make_upload(1)]})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not Image.objects.exists()


def test_an_upload_without_the_csrf_token_is_refused(django_user_model, make_upload):
    staff = django_user_model.objects.create_superuser("curator", password="not-a-real-password")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)

    response = client.post(ADD_URL, {"files": [make_upload(1)]})

    assert response.status_code == 403
    assert not Image.objects.exists()


def test_an_unknown_host_is_refused(client):
    assert client.get("/", HTTP_HOST="images.evil.example").status_code == 400


def test_errors_show_the_sites_own_pages_and_no_traceback(client, monkeypatch):
    client.raise_request_exception = False

    def broken():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "image_list", broken)
    response = client.get("/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong" in html and 'class="site-header"' in html
    assert "secret internals" not in html and "Traceback" not in html

    missing = client.get("/no/such/page/")
    assert missing.status_code == 404 and 'class="site-header"' in missing.content.decode()


def test_a_png_with_html_appended_is_never_served_as_html(client, staff_client):
    from gallery.services import image_create

    payload = encode(photo_like(1, (400, 300)), "PNG") + b"<html><script>alert(document.cookie)</script></html>"
    image = image_create(upload=upload("innocent.png", payload), enqueue=False)
    renditions_create(image=image)

    visitor = Client()
    for rendition in image.renditions.all():
        response = visitor.get(rendition.file.url)
        assert response["Content-Type"] in {"image/jpeg", "image/webp", "image/avif"} and response["X-Content-Type-Options"] == "nosniff"
        assert b"<script>" not in b"".join(response.streaming_content)
    assert visitor.get(image.file.url).status_code == 404  # the original is not public

    original = staff_client.get(reverse("admin:gallery_image_original", args=[image.pk]))
    assert original["Content-Type"] == "image/png" and original["X-Content-Type-Options"] == "nosniff"
    assert original["Content-Disposition"].startswith("attachment")
