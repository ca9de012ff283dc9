"""Media in an S3-compatible object store: private originals, public renditions, clean deletes.

The store is moto's standalone server, an S3 emulator started here as a real HTTP endpoint:
the site, a real Celery worker and anonymous visitors all reach it over HTTP, as they would
reach AWS S3, MinIO, Cloudflare R2 or Backblaze B2 with the same settings.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import RENDITION_SPECS, Image, Rendition
from imagerec.settings.base import media_storages
from tests.conftest import upload, wait_for
from tests.gallery.test_privacy import GPS_IFD, photo_with_gps

BUCKET = "imagerec-media"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str) -> tuple[int, bytes]:
    """An anonymous GET, as a visitor's browser makes it: no credentials, no signature."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3 server on a free local port, with an empty bucket; stopped after the test."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        def answering():
            if process.poll() is not None:
                raise RuntimeError(f"moto's server exited:\n{log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(answering, timeout=30, message="the S3 emulator to listen")
        # boto3 takes credentials from the environment, in this process and in the worker's.
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def bucket_keys(client) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


@pytest.mark.end_to_end
def test_originals_stay_private_and_renditions_are_public_in_object_storage(s3_server, start_worker, staff_client, settings):
    endpoint, client = s3_server
    s3_settings = {
        "MEDIA_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": REGION,
    }
    storages = media_storages("s3", bucket=BUCKET, endpoint_url=endpoint, region=REGION)
    local_files_before = {path for path in settings.MEDIA_ROOT.rglob("*") if path.is_file()}
    start_worker(extra_env=s3_settings)

    with override_settings(STORAGES={**settings.STORAGES, **storages}):
        response = staff_client.post(
            reverse("admin:gallery_image_add"), {"files": [upload("located.jpg", photo_with_gps(11))], "caption": ""}
        )
        assert response.status_code == 302
        image = Image.objects.get()

        # The original is in the bucket, and refused to anyone who is not signed in to it.
        assert bucket_keys(client) == {image.file.name}
        assert http_get(f"{endpoint}/{BUCKET}/{image.file.name}")[0] == 403

        # The worker read it from the bucket and stored the renditions there.
        wait_for(lambda: Image.objects.ready().filter(pk=image.pk).exists(), timeout=90, message="the embedding")
        wait_for(
            lambda: Rendition.objects.filter(image=image).count() == len(RENDITION_SPECS),
            timeout=60, message="the renditions",
        )
        renditions = list(Rendition.objects.filter(image=image))
        assert bucket_keys(client) == {image.file.name, *(rendition.file.name for rendition in renditions)}

        # A visitor's page links to the renditions in the store, fetchable by anyone, no EXIF.
        page = Client().get(reverse("gallery:image-detail", args=[image.pk])).content.decode()
        offered = set(re.findall(rf"{re.escape(endpoint)}/[^\s\"',]+", page))
        displayed = [rendition for rendition in renditions if rendition.kind == "display"]
        assert offered == {f"{endpoint}/{BUCKET}/{rendition.file.name}" for rendition in displayed}
        assert image.file.name not in page
        for url in offered:
            status, body = http_get(url)
            assert status == 200, url
            with PILImage.open(io.BytesIO(body)) as picture:
                assert picture.format == "JPEG"
                assert not picture.getexif().get_ifd(GPS_IFD) and "exif" not in picture.info, url

        # Staff still get the original, metadata intact, streamed through the admin.
        original = staff_client.get(reverse("admin:gallery_image_original", args=[image.pk]))
        assert original.status_code == 200 and original["Content-Disposition"].startswith("attachment")
        with PILImage.open(io.BytesIO(b"".join(original.streaming_content))) as picture:
            assert picture.getexif().get_ifd(GPS_IFD)[1] == "N"

        # Deleting the image removes every object it had, once the delete commits.
        response = staff_client.post(reverse("admin:gallery_image_delete", args=[image.pk]), {"post": "yes"})
        assert response.status_code == 302 and not Image.objects.exists()
        assert bucket_keys(client) == set()

    # Nothing went to the local media folder meanwhile.
    assert {path for path in settings.MEDIA_ROOT.rglob("*") if path.is_file()} == local_files_before


def test_media_storage_settings_refuse_what_cannot_work():
    with pytest.raises(ImproperlyConfigured, match="AWS_STORAGE_BUCKET_NAME"):
        media_storages("s3")
    with pytest.raises(ImproperlyConfigured, match="filesystem"):
        media_storages("ftp")


def test_renditions_can_be_served_from_a_cdn_while_originals_stay_signed():
    storages = media_storages(
        "s3", bucket="originals", renditions_bucket="public", renditions_acl="", renditions_domain="cdn.example.com"
    )
    originals, renditions = storages["default"]["OPTIONS"], storages["renditions"]["OPTIONS"]
    assert (originals["bucket_name"], originals["default_acl"], originals["querystring_auth"]) == ("originals", "private", True)
    assert (renditions["bucket_name"], renditions["default_acl"], renditions["custom_domain"]) == ("public", None, "cdn.example.com")
