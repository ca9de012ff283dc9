"""A visitor's choice reaches the admin's dashboard, in a real browser: chosen from a list,
written by the flush, shown to a signed-in administrator, and the page passes axe."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.test_audits import axe_source, axe_violations  # noqa: F401 (a fixture)
from tests.browser.test_clicks import BROWSER
from tests.browser.test_visitors import gallery, image_path  # noqa: F401 (a fixture)
from tests.clicks.helpers import buffer, flush  # noqa: F401 (a fixture)

PASSWORD = "not-a-real-password"


def test_a_visitors_choice_shows_on_the_dashboard_after_the_flush(
    new_page, gallery, buffer, django_user_model, axe_source, screenshot
):
    source, chosen = gallery["Harbour at dawn"], gallery["Boats in the harbour"]
    visitor = new_page(user_agent=BROWSER)
    visitor.goto(image_path(source) + "?variant=visual")
    visitor.locator("ol.similar .card a").nth(1).click()
    visitor.wait_for_url(f"**{image_path(chosen)}")
    flush()

    django_user_model.objects.create_superuser("curator", "curator@example.com", PASSWORD)
    admin = new_page()
    admin.goto("/admin/")
    admin.get_by_label("Username").fill("curator")
    admin.get_by_label("Password").fill(PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    admin.get_by_role("link", name="Visitors' choices", exact=True).click()

    expect(admin.get_by_role("heading", name="Visitors' choices", level=1)).to_be_visible()
    # One choice, credited to the visual list; its impressions are the source's five items and
    # those of the list under the chosen image, which the visitor saw on arriving.
    expect(admin.locator(".totals li").first).to_have_text(re.compile(r"visual: [\d.]+ % \(1 of \d+; 95 % interval"))
    expect(admin.locator(".totals li").nth(1)).to_have_text(re.compile(r"hybrid: 0 % \(0 of \d+;"))
    pairs = admin.get_by_role("table").filter(has_text="Visitors chose")
    first_pair = pairs.locator("tbody tr").first
    expect(first_pair.get_by_role("cell").nth(0)).to_contain_text("Harbour at dawn")
    expect(first_pair.get_by_role("cell").nth(1)).to_contain_text("Boats in the harbour")
    expect(first_pair.get_by_role("cell").nth(2)).to_have_text("1")
    expect(admin.get_by_role("img", name="Choices per impression at each position of the lists")).to_be_visible()
    # Position 2 was the one chosen: its bar is the only one above the axis.
    bars = admin.locator("svg.chart .position .bar")
    heights = [float(height) for height in bars.evaluate_all("bars => bars.map(bar => bar.getAttribute('height'))")]
    assert len(heights) == 5 and heights[1] > 0 and heights[:1] + heights[2:] == [0.0] * 4
    screenshot(admin, "admin-clicks-dashboard", full_page=True)
    violations = axe_violations(admin, axe_source)
    assert violations == [], "\n".join(violations)

    # The pair's images link to their admin pages.
    first_pair.get_by_role("link", name="Boats in the harbour").click()
    expect(admin).to_have_url(re.compile(rf"/admin/gallery/image/{chosen.pk}/change/$"))
