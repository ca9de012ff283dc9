"""A visitor's choice from a similar list, in a real browser: counted once, with its place."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_visitors import gallery, image_path  # noqa: F401 (a fixture)
from tests.clicks.helpers import buffer, flush, pair_days  # noqa: F401 (a fixture)

# Playwright's headless Chromium names itself HeadlessChrome, which is never counted.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def test_following_a_similar_image_is_counted_once_with_its_position_and_variant(new_page, gallery, buffer):
    page = new_page(user_agent=BROWSER)
    source, chosen = gallery["Harbour at dawn"], gallery["Boats in the harbour"]
    page.goto(image_path(source) + "?variant=visual")
    similar = page.locator("ol.similar .card a")
    expect(similar.nth(1)).to_have_accessible_name("Boats in the harbour similarity 0.86")

    similar.nth(1).click()
    page.wait_for_url(f"**{image_path(chosen)}")
    expect(page.locator("figure.chosen figcaption")).to_contain_text("Boats in the harbour")
    # Again, from the list: the same visitor does not count twice for one pair.
    page.goto(image_path(source) + "?variant=visual")
    page.locator("ol.similar .card a").nth(1).click()
    page.wait_for_url(f"**{image_path(chosen)}")

    flush()
    counts = {row[:4]: row[4:] for row in pair_days()}
    impressions, choices = counts[(source.pk, chosen.pk, "visual", 2)]
    assert choices == 1 and impressions == 2  # the list was shown twice, the choice counted once
    # Every other place in that list was shown twice and never chosen.
    others = [value for key, value in counts.items() if key[0] == source.pk and key[1] != chosen.pk]
    assert others and all(value == (2, 0) for value in others)
