"""Nothing public carries the uploader's camera metadata: pages and the API offer renditions only."""

import io
import re

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import Image
from gallery.renditions import renditions_create
from tests.conftest import encode, photo_like, unit_vector, upload

pytestmark = pytest.mark.django_db

GPS_IFD = 0x8825


def photo_with_gps(seed: int, size=(1600, 1200)) -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = "Camera maker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    return encode(photo_like(seed, size), "JPEG", exif=exif.tobytes())


def urls_in(text: str) -> set[str]:
    """Every media URL a page or a JSON body offers: src, srcset candidates, url fields."""
    return set(re.findall(r"/media/[^\s\"',]+", text))


def test_no_public_url_returns_the_camera_metadata(staff_client):
    from gallery.services import image_create

    client = Client()  # a visitor: not the logged-in staff_client

    located = image_create(upload=upload("located.jpg", photo_with_gps(1)), enqueue=False)
    neighbour = image_create(upload=upload("other.jpg", photo_with_gps(2)), enqueue=False)
    for image, vector in ((located, unit_vector(1, 0)), (neighbour, unit_vector(1, 0.1))):
        renditions_create(image=image)
        image.embeddings.create(model_identity="resnet18/random-seed0", vector=vector)
    Image.objects.update(embedding_status=Image.Status.READY)

    public = [
        client.get("/").content.decode(),
        client.get(reverse("gallery:image-detail", args=[located.pk])).content.decode(),
        client.get(reverse("gallery:api-similar", args=[located.pk])).content.decode(),
    ]
    offered = set().union(*(urls_in(text) for text in public))
    assert len(offered) >= 6  # both images' renditions, on every page
    for url in offered:
        response = client.get(url)
        assert response.status_code == 200, url
        with PILImage.open(io.BytesIO(b"".join(response.streaming_content))) as picture:
            assert picture.format == "JPEG"
            assert not picture.getexif().get_ifd(GPS_IFD) and "exif" not in picture.info, url

    # The original has no public URL at all...
    assert located.file.url not in "".join(public)
    assert client.get(located.file.url).status_code == 404
    # ...and staff can still download it, metadata intact, as an attachment (never inline).
    original = staff_client.get(reverse("admin:gallery_image_original", args=[located.pk]))
    assert original.status_code == 200 and original["Content-Disposition"].startswith("attachment")
    with PILImage.open(io.BytesIO(b"".join(original.streaming_content))) as picture:
        assert picture.getexif().get_ifd(GPS_IFD)[1] == "N"
    assert client.get(reverse("admin:gallery_image_original", args=[located.pk])).status_code == 302  # to log in


def test_a_tiff_is_offered_to_browsers_only_as_jpeg_renditions(client):
    from gallery.services import image_create

    tiff = image_create(upload=upload("scan.tif", encode(photo_like(3, (2400, 1800)), "TIFF")), enqueue=False)
    page = client.get(reverse("gallery:image-detail", args=[tiff.pk])).content.decode()
    assert tiff.file.url not in page and "srcset" not in page  # a placeholder until renditions exist

    renditions_create(image=tiff)
    page = client.get(reverse("gallery:image-detail", args=[tiff.pk])).content.decode()
    candidates = re.search(r'srcset="([^"]+)"', page).group(1).split(", ")
    assert [candidate.rsplit(" ", 1)[1] for candidate in candidates] == ["320w", "640w", "1280w"]
    assert all(candidate.split(" ")[0].endswith(".jpg") for candidate in candidates)
