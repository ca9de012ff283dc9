"""Every picture shown is one a browser can display: web renditions, never the original file,
and no heavier than the place it is shown in needs."""

from __future__ import annotations

import re

from gallery.models import Rendition
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
    assert re.search(r"-1280-[0-9a-f]+\.jpg$", shown["currentSrc"]), shown
    assert not [url for url in requested if url.lower().endswith((".tif", ".tiff"))]

    page.goto("/")
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(img => img.complete && img.naturalWidth > 0)")
    # The card's own crop, in the best format Chromium shows.
    assert re.search(r"-card640-[0-9a-f]+\.avif$", page.eval_on_selector(".card img", "img => img.currentSrc"))


def test_a_phone_gets_card_sized_avif_pictures_at_most_two_fifths_of_the_display_jpegs(new_page, settings):
    """Before card renditions, a phone's gallery loaded each card's 640-pixel display JPEG."""
    settings.GALLERY_PAGE_SIZE = 12
    images = []
    for seed in range(12):
        image = image_create(upload=upload(f"scene-{seed}.jpg", encode(photo_like(seed, (1600, 1200)))), enqueue=False)
        renditions_create(image=image)
        images.append(image)
    page = new_page(device_scale_factor=1.75, is_mobile=True, has_touch=True)  # a mid-range phone, as Lighthouse's
    page.set_viewport_size({"width": 412, "height": 823})
    pictures = {}
    page.on("requestfinished", lambda request: "/media/" in request.url and pictures.update({request.url: request.sizes()["responseBodySize"]}))

    page.goto("/")
    page.wait_for_load_state("networkidle")
    assert pictures and all(re.search(r"-card640-[0-9a-f]+\.avif$", url) for url in pictures), pictures
    shown = page.eval_on_selector_all(".card img", "images => images.filter(img => img.complete && img.currentSrc).length")
    assert shown == len(pictures)
    # The same cards' display JPEGs, 640 pixels wide, as the gallery sent before.
    before = 0
    for url in pictures:
        card = Rendition.objects.get(file=url.split("/media/", 1)[1])
        before += Rendition.objects.get(image=card.image_id, kind="display", spec=640).file.size
    assert sum(pictures.values()) <= 0.4 * before, (sum(pictures.values()), before)
