"""What a visitor does, in a real browser: browse, enlarge, follow similar images, filter, search."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from gallery.models import RENDITION_SPECS, Image, Rendition
from gallery.renditions import renditions_create
from gallery.services import image_create, images_tag
from tests.conftest import encode, photo_like, unit_vector, upload, wait_for

# (caption, vector, tags): similarities to "Harbour at dawn" are 0.98, 0.86, 0.71, 0.29, 0.00.
PICTURES = [
    ("Harbour at dawn", (1, 0), ["sea"]),
    ("Harbour at noon", (1, 0.2), ["sea"]),
    ("Boats in the harbour", (1, 0.6), ["sea"]),
    ("Lighthouse", (1, 1), []),
    ("Mossy stones", (0.3, 1), ["forest"]),
    ("Forest path", (0, 1), ["forest"]),
]


@pytest.fixture
def gallery(image_factory) -> dict[str, Image]:
    images = {}
    for seed, (caption, vector, tags) in enumerate(PICTURES):
        image = image_factory(seed, vector=unit_vector(*vector), caption=caption)
        renditions_create(image=image)
        if tags:
            images_tag(image_ids=[image.pk], names=tags)
        images[caption] = image
    return images


def card_links(page):
    return page.locator("ul.grid .card a, ol.grid .card a")


def image_path(image: Image) -> str:
    return f"/images/{image.pk}/"


def pictures_loaded(page, selector: str) -> list[dict]:
    """naturalWidth and currentSrc of every picture matching selector, once each has loaded."""
    page.wait_for_function(
        "selector => [...document.querySelectorAll(selector)].every(img => img.complete && img.naturalWidth > 0)",
        arg=selector,
    )
    return page.eval_on_selector_all(
        selector, "images => images.map(img => ({alt: img.alt, naturalWidth: img.naturalWidth, src: img.currentSrc}))"
    )


def test_the_gallery_shows_captioned_thumbnails_and_the_keyboard_opens_the_enlarged_view(page, gallery, screenshot):
    page.goto("/")
    expect(page.get_by_role("heading", name="Gallery", exact=True)).to_be_visible()
    expect(card_links(page)).to_have_count(len(PICTURES))
    pictures = pictures_loaded(page, ".card img")
    assert sorted(picture["alt"] for picture in pictures) == sorted(caption for caption, _, _ in PICTURES)
    assert all(picture["src"].endswith(".avif") for picture in pictures)  # the cards' best format
    screenshot(page, "gallery")

    # Tab through the page, as a keyboard user does, to the first card.
    first_card = card_links(page).first
    for _ in range(20):
        page.keyboard.press("Tab")
        if first_card.evaluate("link => link === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the first card")
    title = first_card.get_attribute("data-title")
    opener_href = first_card.get_attribute("href")

    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=title)
    expect(dialog).to_be_visible()
    assert page.url.endswith("/")  # the click opened the dialog instead of following the link
    assert dialog.evaluate("dialog => dialog.contains(document.activeElement)")  # focus moved inside
    enlarged = pictures_loaded(page, "dialog[open] figure img")
    assert enlarged[0]["alt"] == title and enlarged[0]["src"].endswith(".jpg")
    expect(dialog.get_by_role("link", name="Similar images")).to_have_attribute("href", re.compile(re.escape(opener_href) + "$"))
    screenshot(page, "gallery-enlarged")

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert page.evaluate("() => document.activeElement.getAttribute('href')") == opener_href  # focus returned

    # Again, and on to the image's similar images, still by keyboard.
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    similar_link = dialog.get_by_role("link", name="Similar images")
    for _ in range(5):
        if similar_link.evaluate("link => link === document.activeElement"):
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(opener_href) + "$"))
    expect(page.get_by_role("heading", name="Similar images")).to_be_visible()


def test_without_javascript_a_card_goes_straight_to_the_images_page(new_page, gallery):
    page = new_page(java_script_enabled=False)
    page.goto("/")
    page.get_by_role("link", name="Lighthouse").click()
    page.wait_for_url(f"**{image_path(gallery['Lighthouse'])}")
    expect(page.locator("figure.chosen figcaption")).to_contain_text("Lighthouse")


def test_an_images_page_lists_its_similar_images_with_scores_and_leads_on_to_them(page, gallery, screenshot):
    page.goto(image_path(gallery["Harbour at dawn"]))
    expect(page.locator("figure.chosen figcaption")).to_contain_text("Harbour at dawn")
    # Screen readers hear each card as its caption and its score.
    expected = [
        ("Harbour at noon", "0.98"), ("Boats in the harbour", "0.86"), ("Lighthouse", "0.71"),
        ("Mossy stones", "0.29"), ("Forest path", "0.00"),
    ]
    similar = page.locator("ol.similar .card a")
    expect(similar).to_have_count(len(expected))
    for link, (caption, score) in zip(similar.all(), expected):
        expect(link).to_have_accessible_name(f"{caption} similarity {score}")
        expect(link.locator(".score")).to_be_visible()
    pictures_loaded(page, "img")

    # The visible control for k.
    page.get_by_label("How many").select_option("3")
    page.get_by_role("button", name="Update").click()
    page.wait_for_url(re.compile(r"[?&]k=3\b"))
    expect(similar).to_have_count(3)
    pictures_loaded(page, "img")
    screenshot(page, "recommendation", full_page=True)

    # On from there: the boats' own page and its own neighbours, itself not among them.
    page.get_by_role("link", name=re.compile("^Boats in the harbour")).click()
    page.wait_for_url(f"**{image_path(gallery['Boats in the harbour'])}")
    expect(page.locator("figure.chosen figcaption")).to_contain_text("Boats in the harbour")
    expect(similar.first).to_have_accessible_name("Lighthouse similarity 0.97")
    expect(page.locator("ol.similar .caption")).not_to_contain_text(["Boats in the harbour"])


def test_the_tag_navigation_filters_the_gallery(page, gallery):
    page.goto("/")
    tags = page.get_by_role("navigation", name="Tags")
    tags.get_by_role("link", name=re.compile("^forest")).click()
    expect(page.get_by_role("heading", name="Images tagged “forest”")).to_be_visible()
    expect(tags.get_by_role("link", name=re.compile("^forest"))).to_have_attribute("aria-current", "page")
    assert sorted(page.locator(".card .caption").all_inner_texts()) == ["Forest path", "Mossy stones"]
    tags.get_by_role("link", name="All").click()
    expect(card_links(page)).to_have_count(len(PICTURES))


@pytest.mark.end_to_end
def test_a_visitor_searches_by_uploading_a_photo(page, start_worker, screenshot):
    start_worker()
    for seed in range(4):
        image_create(upload=upload(f"scene-{seed}.jpg", encode(photo_like(seed, (480, 360)))))
    wait_for(lambda: Image.objects.ready().count() == 4, timeout=90, message="the gallery to be embedded")
    wait_for(lambda: Rendition.objects.count() == 4 * len(RENDITION_SPECS), timeout=60, message="renditions")
    # A smaller, recompressed copy of scene 2, as a visitor's own photo of it might be.
    photo = encode(photo_like(2, (480, 360)).resize((300, 225)), "JPEG", quality=75)

    page.goto("/")
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Search by photo").click()
    page.get_by_label("Your photo").set_input_files({"name": "mine.jpg", "mimeType": "image/jpeg", "buffer": photo})
    page.get_by_role("button", name="Search").click()

    results = page.get_by_role("region", name="Most similar images")
    expect(results).to_be_visible(timeout=30_000)
    cards = results.locator(".card a")
    expect(cards.first).to_have_accessible_name(re.compile(r"^scene 2 similarity (0\.9\d|1\.00)$"))
    scores = [float(text.split()[-1]) for text in results.locator(".score").all_inner_texts()]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    pictures_loaded(page, "img")
    screenshot(page, "search", full_page=True)
