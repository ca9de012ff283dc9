"""What every response tells the browser: the Content-Security-Policy, the Permissions-Policy,
and how long pictures and static files may be kept (and in which encoding they come)."""

from __future__ import annotations

import gzip
import http.client
import os
import shutil

import brotli
import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from gallery.renditions import renditions_create
from gallery.services import image_create
from tests.test_request_limits import start_server, upload_dir  # noqa: F401 (fixtures)


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)

pytestmark = pytest.mark.django_db

PUBLIC_PATHS = ["/", "/?page=2", "/search/", "/api/images/", "/api/docs/", "/no-such-page/", "/admin/login/"]


def policy(response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy as {directive: [sources]}."""
    header = response.headers["Content-Security-Policy"]
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_every_page_runs_only_the_sites_own_scripts_and_styles_and_cannot_be_framed(client, path):
    # Twice: the second answer may come whole from the page cache, and must say the same.
    for _ in range(2):
        directives = policy(client.get(path))
        assert directives["default-src"] == ["'self'"]
        for kind in ("script-src", "style-src"):
            assert "'unsafe-inline'" not in directives[kind] and "'unsafe-eval'" not in directives[kind]
            # No page needs a nonce, so none is sent (one sent with a cached page would be replayed).
            assert not any(source.startswith("'nonce-") for source in directives[kind]), directives[kind]
        assert directives["object-src"] == ["'none'"]
        assert directives["base-uri"] == ["'none'"]
        assert directives["frame-ancestors"] == ["'none'"]


@pytest.mark.parametrize("path", ["/", "/api/docs/", "/admin/login/"])
def test_every_page_refuses_the_camera_microphone_and_location_to_itself_and_what_it_embeds(client, path):
    header = client.get(path).headers["Permissions-Policy"]
    features = dict(part.strip().split("=", 1) for part in header.split(","))
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert features[feature] == "()"


def test_the_api_docs_page_has_no_inline_script_or_style_and_its_start_up_script_is_a_file(client):
    page = client.get("/api/docs/").content.decode()
    assert "<style" not in page
    scripts = page.count("<script")
    assert scripts and page.count("<script src=") == scripts, page
    # The explorer's start-up script, which the page hands to explorer.js, is served as JavaScript.
    start_up = client.get("/api/docs/?script=")
    assert start_up.status_code == 200
    assert start_up.headers["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle(" in start_up.content


@override_settings(ROOT_URLCONF="tests.browser.urls")
def test_a_rendition_served_by_the_site_is_kept_for_good_and_revalidated_by_its_etag(image_factory):
    image = image_factory(1)
    rendition = renditions_create(image=image)[0]
    client = Client()
    response = client.get(rendition.file.url)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["Last-Modified"]
    b"".join(response.streaming_content)
    again = client.get(rendition.file.url, HTTP_IF_NONE_MATCH=response.headers["ETag"])
    assert again.status_code == 304
    assert again.headers["ETag"] == response.headers["ETag"]
    assert client.get(rendition.file.url, HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_production_static_files_come_brotli_compressed_and_hashed_ones_immutable(tmp_path, settings):
    """collectstatic as production runs it, then WhiteNoise as production serves its output."""
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {
        **settings.STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
    }
    settings.WHITENOISE_USE_FINDERS = False
    # The site's own static folder only: compressing every app's files (Swagger UI's among them)
    # with Brotli takes a minute on a small machine.
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    call_command("collectstatic", interactive=False, verbosity=0)
    from django.templatetags.static import static

    stylesheet = static("css/site.css")
    assert stylesheet != "/static/css/site.css"  # a hashed name
    response = Client().get(stylesheet, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "br"
    assert "immutable" in response.headers["Cache-Control"]
    original = (settings.BASE_DIR / "static" / "css" / "site.css").read_bytes()
    assert brotli.decompress(b"".join(response.streaming_content)) == original


@pytest.mark.end_to_end
def test_behind_caddy_pages_come_compressed_and_renditions_are_kept_for_good(start_server, tmp_path, settings):
    """deploy/Caddyfile in front of gunicorn, as docker-compose.yml runs them."""
    from tests.conftest import encode, photo_like, upload
    from tests.test_request_limits import Caddy

    if shutil.which("caddy") is None:
        _unavailable("caddy is not installed (Debian: apt-get install caddy; make test tries as root)")
    image = image_create(upload=upload("harbour.jpg", encode(photo_like(3, (800, 600)))), enqueue=False)
    rendition = renditions_create(image=image)[0]
    server = start_server(TRUSTED_PROXY_COUNT="1")
    folder = tmp_path / "caddy"
    folder.mkdir()
    proxy = Caddy(server.port, folder, RENDITIONS_ROOT=str(settings.MEDIA_ROOT / "renditions"))
    try:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)

        def get(path: str, **headers: str):
            connection.request("GET", path, headers={"Host": f"localhost:{proxy.port}", **headers})
            response = connection.getresponse()
            return response, response.read()

        page, body = get("/search/", **{"Accept-Encoding": "gzip"})
        assert page.status == 200
        assert page.headers["Content-Encoding"] == "gzip"
        assert b"Search by photo" in gzip.decompress(body)
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

        picture, body = get(rendition.file.url)
        assert picture.status == 200 and body == rendition.file.open("rb").read()
        assert picture.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert picture.headers["Last-Modified"]
        revalidated, _ = get(rendition.file.url, **{"If-None-Match": picture.headers["ETag"]})
        assert revalidated.status == 304
    finally:
        proxy.stop()


def test_the_redoc_page_loads_nothing_from_another_host_and_its_nonce_is_its_own(client):
    first, second = client.get("/api/redoc/"), client.get("/api/redoc/")
    page = first.content.decode()
    assert "https://" not in page and "//fonts." not in page  # no third-party fonts or scripts
    # Redoc writes <style> elements: its start-up script passes on the nonce of this response alone.
    nonce = next(source for source in policy(first)["style-src"] if source.startswith("'nonce-")).strip("'")[6:]
    assert f'nonce="{nonce}"' in page
    assert nonce not in second.content.decode()
