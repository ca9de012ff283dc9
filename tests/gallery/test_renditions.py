"""Thumbnails: made once, re-encoded without metadata, shown with srcset, removed with the image."""

import os

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import RENDITION_WIDTHS, Image, Rendition
from gallery.renditions import renditions_create
from gallery.services import image_create
from gallery.tasks import renditions_create as renditions_create_task
from tests.conftest import encode, photo_like, upload

pytestmark = pytest.mark.django_db

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def photo_with_gps(size=(800, 600), orientation=1) -> bytes:
    """A JPEG that carries a location and, optionally, an EXIF rotation."""
    exif = PILImage.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "Camera maker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    return encode(photo_like(11, size), "JPEG", exif=exif.tobytes())


def stored_image(content: bytes, name="photo.jpg") -> Image:
    return image_create(upload=upload(name, content), enqueue=False)


def test_renditions_are_scaled_and_stripped_of_exif_and_gps():
    image = stored_image(photo_with_gps())
    with PILImage.open(image.file.path) as original:
        assert original.getexif().get_ifd(GPS_IFD)[1] == "N"  # the original keeps its location

    renditions = renditions_create(image=image)

    # Never enlarged: the 800-pixel photo's display rendition is its own width.
    assert sorted((r.spec, r.width, r.height) for r in renditions) == [(320, 320, 240), (640, 640, 480), (1280, 800, 600)]
    for rendition in renditions:
        with PILImage.open(rendition.file.path) as picture:
            assert picture.format == "JPEG" and picture.size == (rendition.width, rendition.height)
            assert not picture.getexif() and "exif" not in picture.info
        assert rendition.file.name.startswith("renditions/")
        assert "photo" not in rendition.file.name


def test_rotated_photo_renditions_are_upright():
    image = stored_image(photo_with_gps(size=(800, 600), orientation=6))  # "rotate 90° clockwise"
    renditions = {r.spec: r for r in renditions_create(image=image)}
    assert (renditions[320].width, renditions[320].height) == (320, 427)


def test_renditions_are_made_once():
    image = stored_image(photo_with_gps())
    first = renditions_create(image=image)
    names = sorted(rendition.file.name for rendition in first)

    assert renditions_create(image=image) == []
    assert renditions_create_task([image.pk]) == {"created": 0, "failed": 0}
    assert sorted(image.renditions.values_list("file", flat=True)) == names


def test_small_images_are_not_enlarged():
    image = stored_image(encode(photo_like(3, (64, 48))))
    renditions_create(image=image)
    assert set(image.renditions.values_list("width", "height")) == {(64, 48)}
    image = Image.objects.with_renditions().get(pk=image.pk)
    assert image.thumbnail.srcset.count("64w") == 1  # one candidate per real width


def test_a_missing_file_is_reported_and_skipped():
    broken = stored_image(encode(photo_like(1, (64, 48))), "broken.jpg")
    fine = stored_image(encode(photo_like(2, (64, 48))), "fine.jpg")
    broken.file.storage.delete(broken.file.name)
    assert renditions_create_task([broken.pk, fine.pk]) == {"created": len(RENDITION_WIDTHS), "failed": 1}
    assert not broken.renditions.exists()


def test_gallery_shows_renditions_with_srcset_and_a_placeholder_until_they_exist(client, image_factory):
    waiting = image_factory(1)
    made = stored_image(encode(photo_like(2, (1000, 750))))
    renditions_create(image=made)
    html = client.get("/").content.decode()

    small, medium, display = (made.renditions.get(spec=spec) for spec in RENDITION_WIDTHS)
    assert f'src="{small.file.url}"' in html
    srcset = f"{small.file.url} 320w, {medium.file.url} 640w, {display.file.url} 1000w"
    assert f'srcset="{srcset}"' in html
    assert f'width="{small.width}" height="{small.height}"' in html
    # Not made yet: a placeholder of the picture's shape, never the original file.
    assert waiting.file.url not in html and made.file.url not in html
    assert f'aria-label="{waiting.title} (the picture is being prepared)"' in html
    assert f"aspect-ratio: {waiting.width} / {waiting.height}" in html


def test_gallery_queries_do_not_depend_on_the_page_size(client, image_factory, settings):
    for seed in range(8):
        renditions_create(image=image_factory(seed))
    counts = {}
    for page_size in (2, 8):
        settings.GALLERY_PAGE_SIZE = page_size
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/")
        assert len(response.context["images"]) == page_size
        counts[page_size] = len(queries)
    # The page's images, their count, all their thumbnails, and the tags to filter by.
    assert counts[2] == counts[8] <= 4, counts


def test_deleting_an_image_removes_its_file_and_renditions_after_commit(
    image_factory, django_capture_on_commit_callbacks
):
    image = image_factory(1)
    renditions_create(image=image)
    paths = [image.file.path] + [rendition.file.path for rendition in image.renditions.all()]
    assert len(paths) == 1 + len(RENDITION_WIDTHS)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        image.delete()
    assert all(os.path.exists(path) for path in paths)  # nothing gone before the commit
    assert not Rendition.objects.exists()
    for callback in callbacks:
        callback()
    assert not any(os.path.exists(path) for path in paths)


def test_admin_list_uses_the_small_rendition(staff_client, image_factory):
    image = image_factory(1)
    renditions_create(image=image)
    html = staff_client.get(reverse("admin:gallery_image_changelist")).content.decode()
    assert image.renditions.get(spec=RENDITION_WIDTHS[0]).file.url in html


def test_image_page_offers_only_renditions_to_the_browser(client):
    image = stored_image(encode(photo_like(2, (1600, 1200))))
    renditions_create(image=image)
    html = client.get(reverse("gallery:image-detail", args=[image.pk])).content.decode()
    small, medium, display = (image.renditions.get(spec=spec) for spec in RENDITION_WIDTHS)
    expected = f"{small.file.url} 320w, {medium.file.url} 640w, {display.file.url} 1280w"
    assert f'src="{display.file.url}" srcset="{expected}"' in html
    assert 'width="1280" height="960"' in html
    assert image.file.url not in html


def test_a_large_portrait_photo_still_gets_full_width_sharp_renditions():
    # Decoded at reduced scale for speed, but never below the widest rendition.
    image = stored_image(encode(photo_like(12, (1600, 3200))), name="tall.jpg")
    renditions = {r.spec: r for r in renditions_create(image=image)}
    assert (renditions[640].width, renditions[640].height) == (640, 1280)
    with PILImage.open(image.file.path) as original, PILImage.open(renditions[640].file.path) as thumbnail:
        reference = original.convert("RGB").resize((640, 1280), PILImage.Resampling.LANCZOS)
        difference = np.abs(np.asarray(reference, dtype=np.int16) - np.asarray(thumbnail, dtype=np.int16))
    assert difference.mean() < 4  # the same picture, not a blurred enlargement
