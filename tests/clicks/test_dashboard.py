"""The admin's dashboard of visitors' choices: its figures from real daily counts, its intervals
and test against hand computations, its queries, and who may see it."""

from __future__ import annotations

import datetime
import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from clicks.dashboard import dashboard_get
from clicks.models import PairDay
from clicks.proportions import binomial_test_two_sided, wilson_interval
from clicks.selectors import comparison_of

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/clicks/pairday/"


def counts(source, target, *, comparison, variant, position, impressions, choices, days_ago=0):
    PairDay.objects.create(
        day=timezone.now().date() - datetime.timedelta(days=days_ago), source=source, target=target,
        comparison=comparison, variant=variant, position=position, impressions=impressions, choices=choices,
    )


@pytest.fixture
def traffic(image_factory):
    """A week of counts: an interleaved list under a (hybrid's items chosen 9 times, visual's
    once), a list asked for by name yesterday, an A/B list under d, and a month-old day that the
    last 7 days must leave out."""
    a, b, c, d, e = (image_factory(seed, caption=f"Picture {seed}") for seed in range(5))
    counts(a, b, comparison="interleaved", variant="visual", position=1, impressions=40, choices=1)
    counts(a, c, comparison="interleaved", variant="hybrid", position=2, impressions=40, choices=9)
    counts(a, e, comparison="interleaved", variant="visual", position=3, impressions=40, choices=0)
    counts(a, b, comparison="single", variant="visual", position=1, impressions=10, choices=2, days_ago=1)
    counts(d, b, comparison="ab", variant="hybrid", position=1, impressions=20, choices=0, days_ago=2)
    counts(d, e, comparison="interleaved", variant="visual", position=2, impressions=500, choices=400, days_ago=30)
    return a, b, c, d, e


# --- The statistics, against hand computations --------------------------------------------


def test_the_binomial_test_matches_sums_of_binomial_coefficients_by_hand():
    # 9 of 10: P(X >= 9) = (C(10,9) + C(10,10)) / 2^10 = 11/1024, twice for two sides.
    assert binomial_test_two_sided(successes=9, trials=10) == pytest.approx(22 / 1024, rel=1e-12)
    assert binomial_test_two_sided(successes=1, trials=10) == pytest.approx(22 / 1024, rel=1e-12)
    # 7 of 10: (120 + 45 + 10 + 1) / 1024, twice.
    assert binomial_test_two_sided(successes=7, trials=10) == pytest.approx(352 / 1024, rel=1e-12)
    # None of 12: 1/4096, twice.
    assert binomial_test_two_sided(successes=0, trials=12) == pytest.approx(2 / 4096, rel=1e-12)
    assert binomial_test_two_sided(successes=5, trials=10) == 1.0
    assert binomial_test_two_sided(successes=0, trials=0) == 1.0
    # Many trials: 51,000 of 100,000 is 6.3 standard deviations from one half (normal tails: 2.59e-10).
    assert binomial_test_two_sided(successes=51_000, trials=100_000) == pytest.approx(2.59e-10, rel=0.01)


def test_wilson_intervals_match_the_textbook_values():
    # Wilson (1927) at z = 1.96: 9 of 10 -> 0.596 to 0.982; 0 of 10 -> 0 to 0.278.
    assert wilson_interval(successes=9, trials=10) == pytest.approx((0.5958, 0.9821), abs=1e-4)
    assert wilson_interval(successes=0, trials=10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(successes=0, trials=0) == (0.0, 1.0)


def test_a_page_asking_for_no_variant_names_the_sites_comparison(settings):
    settings.CLICKS_COMPARISON = "ab"
    assert comparison_of(variant=None) == "ab"
    assert comparison_of(variant="interleaved") == "interleaved"
    assert comparison_of(variant="hybrid") == comparison_of(variant="visual") == "single"


# --- The figures ---------------------------------------------------------------------------


def test_rates_win_rate_positions_and_pairs_from_the_daily_counts(traffic):
    a, b, c, _, e = traffic
    figures = dashboard_get(days=7)

    visual, hybrid = figures.by_variant["visual"], figures.by_variant["hybrid"]
    assert (visual.choices, visual.impressions) == (3, 90)  # the month-old day left out
    assert (hybrid.choices, hybrid.impressions) == (9, 60)
    today = dict(figures.daily)[timezone.now().date()]
    assert today["hybrid"].rate == pytest.approx(9 / 40) and today["visual"].rate == pytest.approx(1 / 80)
    assert [day for day, rates in figures.daily if rates] == [
        timezone.now().date() - datetime.timedelta(days=ago) for ago in (2, 1, 0)
    ]

    # Interleaved lists only: the name-asked list's 2 visual choices are not votes.
    assert (figures.interleaving.hybrid, figures.interleaving.visual) == (9, 1)
    assert figures.interleaving.share == pytest.approx(0.9)
    assert figures.interleaving.interval == pytest.approx((0.5958, 0.9821), abs=1e-4)
    assert figures.interleaving.p_value == pytest.approx(22 / 1024)

    assert [(position, rate.choices, rate.impressions) for position, rate in figures.by_position] == [
        (1, 3, 70), (2, 9, 40), (3, 0, 40),
    ]
    assert [(row.source, row.target, row.choices) for row in figures.most_chosen] == [(a, c, 9), (a, b, 3)]
    assert [(row.target, row.impressions) for row in figures.never_chosen] == [(e, 40)]


def test_one_comparison_and_a_longer_period(traffic):
    _, b, _, d, _ = traffic
    single = dashboard_get(days=7, comparison="single")
    assert (single.by_variant["visual"].choices, single.by_variant["visual"].impressions) == (2, 10)
    assert single.by_variant["hybrid"].impressions == 0
    ab = dashboard_get(days=7, comparison="ab")
    assert [(row.target, row.impressions) for row in ab.never_chosen] == [(b, 20)]

    ninety = dashboard_get(days=90)
    assert ninety.interleaving.visual == 401  # the month-old day counts now
    assert ninety.most_chosen[0].choices == 400 and ninety.most_chosen[0].source == d


def test_the_dashboard_costs_the_same_queries_however_many_rows(image_factory):
    images = [image_factory(seed) for seed in range(12)]

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            dashboard_get(days=30)
        return len(captured)

    counts(images[0], images[1], comparison="interleaved", variant="visual", position=1, impressions=5, choices=1)
    few = queries()
    for days_ago in range(20):
        for position, target in enumerate(images[1:], start=1):
            counts(images[0], target, comparison="interleaved", variant="hybrid", position=position,
                   impressions=10, choices=position % 3, days_ago=days_ago)
    assert queries() == few <= 8


# --- The page --------------------------------------------------------------------------------


def test_staff_see_the_figures_as_words_and_charts_without_scripts_or_style_attributes(traffic, staff_client):
    response = staff_client.get(DASHBOARD + "?days=7")
    assert response.status_code == 200
    page = html.unescape(response.content.decode())

    assert "9 of 60" in page and "15.0 %" in page  # hybrid's choices per impression
    assert "The hybrid list's items took 9 of the 10 choices from interleaved lists: 90.0 %" in page
    assert "95 % interval 59.6 % to 98.2 %" in page
    assert "p = 0.0215" in page
    assert "Picture 2" in page and reverse("admin:gallery_image_change", args=[traffic[2].pk]) in page
    # Three charts, each an image with a name and a description.
    charts = re.findall(r'<svg class="chart"[^>]*role="img" aria-labelledby="([\w-]+) ([\w-]+)"', page)
    assert len(charts) == 3
    for title, description in charts:
        assert f'<title id="{title}">' in page and f'<desc id="{description}">' in page
    dashboard_part = page[page.index('<div id="content-main">'):]
    assert "<script" not in dashboard_part and "style=" not in dashboard_part
    assert 'aria-current="page">last 7 days' in page


def test_the_admin_index_links_to_the_dashboard(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()
    assert f'href="{DASHBOARD}"' in page and "Visitors' choices" in html.unescape(page)


def test_a_period_that_is_not_offered_shows_the_default(traffic, staff_client):
    page = staff_client.get(DASHBOARD + "?days=100000").content.decode()
    assert 'aria-current="page">last 30 days' in page
    assert staff_client.get(DASHBOARD + "?comparison=popular").status_code == 200


def test_an_empty_period_says_so(staff_client):
    page = staff_client.get(DASHBOARD).content.decode()
    assert "No choice from an interleaved list in this period." in page
    assert "No list was shown in this period." in page


def test_visitors_are_sent_to_the_login_and_staff_without_the_permission_refused(client, django_user_model):
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))

    staff = django_user_model.objects.create_user("helper", password="not-a-real-password", is_staff=True)
    client.force_login(staff)
    assert client.get(DASHBOARD).status_code == 403
