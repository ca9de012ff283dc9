"""What the pages look like while and after they load, in a real browser: nothing moves when a
picture arrives, nothing is drawn larger than its pixels, a 320-pixel screen scrolls only down,
controls are large enough to touch, and the pages say what they are to crawlers and to sites
a link is shared on."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from gallery.models import Image
from gallery.renditions import renditions_create
from gallery.services import image_create
from tests.conftest import encode, photo_like, upload

# A slow network for pictures only: each rendition arrives this long after it is asked for,
# well after the page has been laid out without it. (The live server serves media itself, so
# the delay is the browser's: Playwright lets other requests through while a handler waits.)
PICTURE_DELAY_MS = 1500


LONG_WORD = "Panorama" * 20  # 160 letters without a space


@pytest.fixture
def slow_page(page):
    def delay(route):
        page.wait_for_timeout(PICTURE_DELAY_MS)
        route.fallback()

    page.route("**/media/renditions/**", delay)
    return page


def shown_image(seed: int, size: tuple[int, int], caption: str = "") -> Image:
    image = image_create(upload=upload(f"photo-{seed}.jpg", encode(photo_like(seed, size))), enqueue=False)
    renditions_create(image=image)
    if caption:
        Image.objects.filter(pk=image.pk).update(caption=caption)
        image.refresh_from_db()
    return image


# Every layout shift the page has recorded (buffered: from its start), as (value, after input).
LAYOUT_SHIFTS = """() => new Promise(resolve => {
  const shifts = [];
  new PerformanceObserver(list => shifts.push(...list.getEntries()))
    .observe({type: "layout-shift", buffered: true});
  setTimeout(() => resolve(shifts.map(shift => [shift.value, shift.hadRecentInput])), 200);
})"""

ALL_LOADED = "selector => [...document.querySelectorAll(selector)].every(img => img.complete && img.naturalWidth > 0)"
# How long each picture took, from its request to its last byte, in milliseconds.
PICTURE_TIMES = "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/media/')).map(e => e.duration)"


def test_nothing_moves_when_a_slow_picture_arrives_on_an_images_page(slow_page):
    page = slow_page
    image = shown_image(1, (1600, 1200), caption="Harbour at dawn")
    page.goto(f"/images/{image.pk}/")
    page.wait_for_function(ALL_LOADED, arg="figure.chosen img", timeout=10_000)
    assert min(page.evaluate(PICTURE_TIMES)) >= PICTURE_DELAY_MS * 0.9  # it was slow
    assert page.evaluate(LAYOUT_SHIFTS) == []


def test_nothing_moves_when_the_enlarged_picture_arrives_in_the_dialog(slow_page):
    page = slow_page
    # A landscape and a portrait picture: the second opened must not start from the first's box.
    shown_image(1, (1600, 1200), caption="Landscape")
    shown_image(2, (900, 1600), caption="Portrait")
    page.goto("/")
    page.wait_for_function(ALL_LOADED, arg=".card img", timeout=10_000)
    for caption in ("Landscape", "Portrait"):
        page.get_by_role("link", name=caption).click()
        dialog = page.get_by_role("dialog", name=caption)
        expect(dialog).to_be_visible()
        # The box is kept, in the picture's shape, before the picture comes.
        box = dialog.locator("img").bounding_box()
        assert box["width"] > 100 and (box["width"] > box["height"]) == (caption == "Landscape"), box
        page.wait_for_function(ALL_LOADED, arg="dialog[open] img", timeout=10_000)
        # The same box, give or take the rounding of the rendition's height to whole pixels.
        loaded = dialog.locator("img").bounding_box()
        assert all(abs(loaded[side] - box[side]) < 1 for side in box), (loaded, box)
        assert min(page.evaluate(PICTURE_TIMES)) >= PICTURE_DELAY_MS * 0.9
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
    assert [shift for shift in page.evaluate(LAYOUT_SHIFTS) if not shift[1]] == []


def test_a_small_picture_is_never_drawn_larger_than_its_pixels(page):
    small = shown_image(2, (360, 270), caption="A small picture")
    large = shown_image(3, (1600, 1200), caption="A large picture")

    page.goto(f"/images/{small.pk}/")
    page.wait_for_function(ALL_LOADED, arg="figure.chosen img")
    box = page.locator("figure.chosen img").bounding_box()
    assert (box["width"], box["height"]) == (360, 270)

    page.goto(f"/images/{large.pk}/")
    page.wait_for_function(ALL_LOADED, arg="figure.chosen img")
    box = page.locator("figure.chosen img").bounding_box()
    assert box["height"] <= 448 and box["width"] <= 640 and round(box["width"] / box["height"], 2) == 1.33

    page.goto("/")
    page.get_by_role("link", name="A small picture").click()
    page.wait_for_function(ALL_LOADED, arg="dialog[open] img")
    box = page.locator("dialog[open] img").bounding_box()
    assert (box["width"], box["height"]) == (360, 270)


def test_the_first_row_of_the_gallery_loads_at_once_and_the_rest_when_scrolled_near(page, settings):
    settings.GALLERY_PAGE_SIZE = 12
    for seed in range(12):
        shown_image(seed, (480, 360))
    page.goto("/")
    cards = page.eval_on_selector_all(
        ".card img", "images => images.map(img => [Math.round(img.getBoundingClientRect().top), img.loading, img.fetchPriority])"
    )
    first_row = [card for card in cards if card[0] == cards[0][0]]
    assert len(first_row) == 4  # the widest screen's row
    assert [loading for _, loading, _ in cards] == ["auto"] * 4 + ["lazy"] * 8
    assert [priority for _, _, priority in cards] == ["high"] + ["auto"] * 11

    image = Image.objects.first()
    page.goto(f"/images/{image.pk}/")
    assert page.eval_on_selector("figure.chosen img", "img => [img.loading, img.fetchPriority]") == ["auto", "high"]


@pytest.mark.parametrize("path", ["/", "/?page=2", "image", "/search/"])
def test_a_320_pixel_screen_scrolls_only_down(page, settings, path):
    settings.GALLERY_PAGE_SIZE = 2
    images = [shown_image(seed, (1600, 1200), caption=f"{LONG_WORD} {seed}") for seed in range(7)]
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(f"/images/{images[0].pk}/" if path == "image" else path)
    page.wait_for_function(ALL_LOADED, arg="img:not([loading=lazy])")

    assert page.evaluate("() => document.documentElement.scrollWidth") <= 320
    search_link = page.get_by_role("navigation", name="Site").get_by_role("link", name="Search by photo").bounding_box()
    assert 0 <= search_link["x"] and search_link["x"] + search_link["width"] <= 320
    if path == "/":
        # A caption too long for its card ends in an ellipsis, on one line.
        caption = page.locator(".card .caption").first
        assert caption.evaluate("span => getComputedStyle(span).textOverflow") == "ellipsis"
        assert caption.evaluate("span => span.scrollWidth > span.clientWidth")
        assert caption.bounding_box()["height"] < 50  # one line


def test_page_links_are_targets_a_finger_can_hit(page, settings):
    settings.GALLERY_PAGE_SIZE = 1
    for seed in range(6):
        shown_image(seed, (64, 48))
    for width in (320, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto("/?page=3")
        targets = page.locator(".pagination a")
        assert targets.count() >= 4  # previous, next, and other pages
        for target in targets.all():
            box = target.bounding_box()
            assert box["width"] >= 24 and box["height"] >= 24, (target.inner_text(), box)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width


def test_pages_say_what_they_are_to_crawlers_and_to_sites_a_link_is_shared_on(page, new_page, site):
    image = shown_image(4, (1600, 1200), caption="Boats in the harbour")
    pages = ["/", f"/images/{image.pk}/", f"/images/{image.pk}/?diverse=1", "/search/"]
    for path in pages:
        page.goto(path)
        description = page.locator('meta[name="description"]').get_attribute("content")
        assert len(description) > 30, (path, description)
        assert page.locator("h1").count() == 1, path
        # Every id that aria-describedby names is on the page.
        missing = page.evaluate(
            """() => [...document.querySelectorAll("[aria-describedby]")]
                .flatMap(element => element.getAttribute("aria-describedby").split(/\\s+/))
                .filter(id => !document.getElementById(id))"""
        )
        assert missing == [], (path, missing)
        assert page.locator("[style]").count() == 0, path  # nothing a strict style-src refuses
        icon = page.locator('link[rel="icon"]').first.get_attribute("href")
        response = page.request.get(icon)
        assert response.ok and response.headers["content-type"].startswith("image/")

    # A search sent without a photo (the browser's own check off) names its error the same way.
    page.goto("/search/")
    page.evaluate("() => { document.querySelector('form.search-form').noValidate = true; }")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("alert")).to_be_visible()
    described = page.get_by_label("Your photo").get_attribute("aria-describedby").split()
    assert len(described) == 2 and all(page.locator(f"#{id}").count() == 1 for id in described), described

    page.goto(f"/images/{image.pk}/?diverse=1")
    expect(page.get_by_role("heading", level=1)).to_have_text("Boats in the harbour")
    meta = page.eval_on_selector_all(
        "meta[property^='og:'], meta[name^='twitter:']",
        "tags => Object.fromEntries(tags.map(tag => [tag.getAttribute('property') || tag.name, tag.content]))",
    )
    assert meta["og:title"] == "Boats in the harbour" and meta["twitter:card"] == "summary_large_image"
    assert meta["og:url"] == f"{site}/images/{image.pk}/"
    # The preview is a rendition at an absolute address that anyone can fetch, at the size it says.
    assert urlsplit(meta["og:image"]).scheme == "http" and re.search(r"/media/renditions/.+\.jpg$", meta["og:image"])
    preview = new_page().request.get(meta["og:image"])
    assert preview.ok and preview.headers["content-type"] == "image/jpeg"
    assert (meta["og:image:width"], meta["og:image:height"]) == ("1280", "960")

    robots = page.request.get("/robots.txt")
    assert robots.ok and robots.headers["content-type"].startswith("text/plain")
    assert "User-agent: *" in robots.text()
    favicon = page.request.get("/favicon.ico")
    assert favicon.ok and favicon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
