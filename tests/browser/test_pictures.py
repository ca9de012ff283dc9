"""Every picture shown is one a browser can display: web renditions, never the original file."""

from __future__ import annotations

from gallery.renditions import renditions_create
from gallery.services import image_create
from tests.conftest import encode, photo_like, upload


def test_a_large_tiff_is_shown_as_its_jpeg_rendition_on_a_dense_screen(new_page):
    tiff = image_create(
        upload=upload("survey.tif", encode(photo_like(7, (3000, 2000)), "TIFF"), "image/tiff"), enqueue=False
    )
    renditions_create(image=tiff)
    page = new_page(device_scale_factor=2)
    requested = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(f"/images/{tiff.pk}/")
    page.wait_for_function("() => { const img = document.querySelector('figure.chosen img'); return img && img.complete; }")
    shown = page.eval_on_selector(
        "figure.chosen img", "img => ({naturalWidth: img.naturalWidth, currentSrc: img.currentSrc})"
    )
    assert shown["naturalWidth"] > 0, shown  # the browser decoded it
    # At twice the density the browser picks the widest rendition, a JPEG.
    assert shown["currentSrc"].endswith("-1280.jpg"), shown
    assert not [url for url in requested if url.lower().endswith((".tif", ".tiff"))]

    page.goto("/")
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(img => img.complete && img.naturalWidth > 0)")
    assert page.eval_on_selector(".card img", "img => img.currentSrc").endswith(".jpg")
