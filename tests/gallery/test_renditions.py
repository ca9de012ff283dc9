"""Renditions: made once, re-encoded without metadata, shown with srcset, removed with the image.

Every image gets display renditions (the whole picture, JPEG) and card renditions (cropped to
a gallery card's 3:2 shape, in AVIF, WebP and JPEG)."""

import os
import re

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import CARD_WIDTHS, RENDITION_SPECS, RENDITION_WIDTHS, Image, Rendition
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


def by_spec(renditions) -> dict[tuple[str, int, str], Rendition]:
    return {(rendition.kind, rendition.spec, rendition.format): rendition for rendition in renditions}


PILLOW_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


def test_renditions_are_scaled_and_stripped_of_exif_and_gps():
    image = stored_image(photo_with_gps())
    with PILImage.open(image.file.path) as original:
        assert original.getexif().get_ifd(GPS_IFD)[1] == "N"  # the original keeps its location

    renditions = renditions_create(image=image)

    # Never enlarged: the 800-pixel photo's display rendition is its own width.
    display = sorted((r.spec, r.width, r.height) for r in renditions if r.kind == "display")
    assert display == [(320, 320, 240), (640, 640, 480), (1280, 800, 600)]
    # Cards: the middle of the 4:3 photo in the card's 3:2, in each format.
    cards = sorted((r.spec, r.format, r.width, r.height) for r in renditions if r.kind == "card")
    assert cards == [(320, f, 320, 213) for f in ("avif", "jpeg", "webp")] + [(640, f, 640, 426) for f in ("avif", "jpeg", "webp")]
    for rendition in renditions:
        with PILImage.open(rendition.file.path) as picture:
            assert picture.format == PILLOW_FORMATS[rendition.format]
            assert picture.size == (rendition.width, rendition.height)
            assert not picture.getexif() and "exif" not in picture.info and "xmp" not in picture.info
        assert rendition.file.name.startswith("renditions/")
        assert "photo" not in rendition.file.name
    assert len({rendition.file.name for rendition in renditions}) == len(RENDITION_SPECS)


def test_rotated_photo_renditions_are_upright():
    image = stored_image(photo_with_gps(size=(800, 600), orientation=6))  # "rotate 90° clockwise"
    renditions = by_spec(renditions_create(image=image))
    assert (renditions["display", 320, "jpeg"].width, renditions["display", 320, "jpeg"].height) == (320, 427)
    assert (renditions["card", 320, "avif"].width, renditions["card", 320, "avif"].height) == (320, 213)


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
    assert set(image.renditions.filter(kind="display").values_list("width", "height")) == {(64, 48)}
    assert set(image.renditions.filter(kind="card").values_list("width", "height")) == {(64, 43)}
    image = Image.objects.with_renditions().get(pk=image.pk)
    assert image.thumbnail.srcset.count("64w") == 1  # one candidate per real width
    assert image.card_picture.srcset.count("64w") == 1
    assert all(source.srcset.count("64w") == 1 for source in image.card_picture.sources)
    # Its own page shows it at its own size, not blown up to the page's box.
    assert (image.page_picture.width, image.page_picture.height) == (64, 48)


def test_a_missing_file_is_reported_and_skipped():
    broken = stored_image(encode(photo_like(1, (64, 48))), "broken.jpg")
    fine = stored_image(encode(photo_like(2, (64, 48))), "fine.jpg")
    broken.file.storage.delete(broken.file.name)
    assert renditions_create_task([broken.pk, fine.pk]) == {"created": len(RENDITION_SPECS), "failed": 1}
    assert not broken.renditions.exists()


def test_gallery_shows_card_renditions_best_format_first_and_a_placeholder_until_they_exist(client, image_factory):
    waiting = image_factory(1)
    made = stored_image(encode(photo_like(2, (1000, 750))))
    renditions_create(image=made)
    html = client.get("/").content.decode()

    def card_srcset(image_format):
        return ", ".join(
            f"{made.renditions.get(kind='card', spec=width, format=image_format).file.url} {width}w" for width in CARD_WIDTHS
        )

    small = made.renditions.get(kind="card", spec=320, format="jpeg")
    avif = f'<source type="image/avif" srcset="{card_srcset("avif")}"'
    webp = f'<source type="image/webp" srcset="{card_srcset("webp")}"'
    jpeg = f'<img src="{small.file.url}" srcset="{card_srcset("jpeg")}"'
    assert avif in html and webp in html and jpeg in html
    assert html.index(avif) < html.index(webp) < html.index(jpeg)  # the browser takes the first it can show
    assert f'width="{small.width}" height="{small.height}"' in html
    # The enlarged view gets the whole picture.
    display = f"{made.renditions.get(kind='display', spec=1280).file.url} 1000w"
    assert re.search(r'data-display-srcset="[^"]*' + re.escape(display) + '"', html)
    # Not made yet: a placeholder of the picture's shape (an <svg viewBox>, no style
    # attribute), never the original file.
    assert waiting.file.url not in html and made.file.url not in html
    assert f'aria-label="{waiting.title} (the picture is being prepared)"' in html
    assert f'<svg viewBox="0 0 {waiting.width} {waiting.height}"' in html
    assert "style=" not in html


def test_older_images_are_shown_whole_until_the_sweeper_has_their_card_renditions_made(client, image_factory):
    # An image from before card renditions: display JPEGs only.
    image = stored_image(encode(photo_like(2, (1000, 750))))
    renditions_create(image=image)
    image.renditions.filter(kind="card").delete()
    assert list(Image.objects.without_renditions()) == [image]
    html = client.get("/").content.decode()
    small = image.renditions.get(kind="display", spec=320)
    assert f'<img src="{small.file.url}"' in html and "<picture>" not in html

    assert len(renditions_create(image=image)) == len(RENDITION_SPECS) - len(RENDITION_WIDTHS)
    assert not Image.objects.without_renditions().exists()
    assert "<picture>" in client.get("/").content.decode()


def test_only_the_first_row_of_the_gallery_loads_at_once(client, image_factory, settings):
    settings.GALLERY_PAGE_SIZE = 6
    for seed in range(6):
        renditions_create(image=image_factory(seed))
    html = client.get("/").content.decode()
    cards = re.findall(r"<img [^>]*>", html)
    assert len(cards) == 6
    assert ['loading="lazy"' in card for card in cards] == [False] * 4 + [True] * 2
    assert ['fetchpriority="high"' in card for card in cards] == [True] + [False] * 5


def test_a_made_again_rendition_never_takes_an_old_name(image_factory):
    image = image_factory(1)
    first = {rendition.file.name for rendition in renditions_create(image=image)}
    for rendition in image.renditions.all():  # files and rows gone, as an administrator's clean-up leaves them
        rendition.file.delete(save=False)
        rendition.delete()
    with PILImage.open(image.file.path) as original:  # the picture changes (an edit, a new encoder)
        original.convert("RGB").rotate(90).save(image.file.path, "JPEG")
    second = {rendition.file.name for rendition in renditions_create(image=image)}
    assert not first & second


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
    assert len(paths) == 1 + len(RENDITION_SPECS)

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
    assert image.renditions.get(kind="display", spec=RENDITION_WIDTHS[0]).file.url in html


def test_image_page_offers_only_renditions_to_the_browser(client):
    image = stored_image(encode(photo_like(2, (1600, 1200))))
    renditions_create(image=image)
    html = client.get(reverse("gallery:image-detail", args=[image.pk])).content.decode()
    small, medium, display = (image.renditions.get(kind="display", spec=spec) for spec in RENDITION_WIDTHS)
    expected = f"{small.file.url} 320w, {medium.file.url} 640w, {display.file.url} 1280w"
    assert f'src="{display.file.url}" srcset="{expected}"' in html
    # Sized for the page's 40rem x 28rem box before it loads: 448 pixels high, in its shape.
    assert 'width="597" height="448"' in html
    assert 'sizes="(max-width: 629px) calc(100vw - 32px), 597px"' in html
    assert image.file.url not in html


def test_a_large_portrait_photo_still_gets_full_width_sharp_renditions():
    # Decoded at reduced scale for speed, but never below the widest rendition.
    image = stored_image(encode(photo_like(12, (1600, 3200))), name="tall.jpg")
    renditions = by_spec(renditions_create(image=image))
    medium = renditions["display", 640, "jpeg"]
    assert (medium.width, medium.height) == (640, 1280)
    with PILImage.open(image.file.path) as original, PILImage.open(medium.file.path) as thumbnail:
        reference = original.convert("RGB").resize((640, 1280), PILImage.Resampling.LANCZOS)
        difference = np.abs(np.asarray(reference, dtype=np.int16) - np.asarray(thumbnail, dtype=np.int16))
    assert difference.mean() < 4  # the same picture, not a blurred enlargement
