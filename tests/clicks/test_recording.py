"""What visitors were shown and what they chose is counted once, and only for visitors' browsers."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from clicks.models import PairDay
from clicks.recording import SHOWN_HEADER
from tests.clicks.helpers import BROWSER, buffer, flush, pair_days, visitor  # noqa: F401
from tests.observability.helpers import scrape, value

pytestmark = pytest.mark.django_db


def choice_url(source, position, variant, target, comparison=None) -> str:
    """The link at ``position`` of ``source``'s list (images or plain ids), naming the list's
    comparison or, as links from before it was recorded, not."""
    source, target = getattr(source, "pk", source), getattr(target, "pk", target)
    if comparison is None:
        return reverse("clicks:choice", args=[source, position, variant, target])
    return reverse("clicks:choice", args=[source, position, comparison, variant, target])


def pair_days_by_comparison():
    return sorted(PairDay.objects.values_list("source_id", "target_id", "comparison", "variant", "position", "impressions", "choices"))


def test_a_followed_link_is_counted_once_with_its_position_and_variant(buffer, image_factory):
    source, target = image_factory(1), image_factory(2)

    response = visitor().get(choice_url(source, 3, "hybrid", target))

    assert response.status_code == 302
    assert response["Location"] == reverse("gallery:image-detail", args=[target.pk])
    assert response["Cache-Control"] == "no-store"
    assert response["X-Robots-Tag"] == "noindex"
    assert not response.cookies
    assert flush().events == 1
    assert pair_days() == [(source.pk, target.pk, "hybrid", 3, 0, 1)]


def test_a_link_names_the_comparison_its_list_was_made_by(buffer, image_factory):
    source, target = image_factory(1), image_factory(2)

    interleaved = visitor().get(choice_url(source, 2, "hybrid", target, comparison="interleaved"))
    without_comparison = visitor().get(choice_url(source, 2, "hybrid", target))

    assert choice_url(source, 2, "hybrid", target, comparison="interleaved") == f"/go/{source.pk}/2/interleaved/hybrid/{target.pk}/"
    assert interleaved["Location"] == without_comparison["Location"] == reverse("gallery:image-detail", args=[target.pk])
    flush()
    assert pair_days_by_comparison() == [
        (source.pk, target.pk, "interleaved", "hybrid", 2, 0, 1),
        (source.pk, target.pk, "single", "hybrid", 2, 0, 1),
    ]


NOT_COUNTED = {
    "do not track": {"HTTP_DNT": "1"},
    "global privacy control": {"HTTP_SEC_GPC": "1"},
    "chrome's prefetch": {"HTTP_SEC_PURPOSE": "prefetch"},
    "chrome's prerender": {"HTTP_SEC_PURPOSE": "prefetch;prerender"},
    "an older prefetch": {"HTTP_PURPOSE": "prefetch"},
    "googlebot": {"HTTP_USER_AGENT": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"},
    "bingbot": {"HTTP_USER_AGENT": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"},
    "a headless browser": {
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0 Safari/537.36"
    },
    "curl": {"HTTP_USER_AGENT": "curl/8.5.0"},
    "wget": {"HTTP_USER_AGENT": "Wget/1.21.4"},
    "python": {"HTTP_USER_AGENT": "python-requests/2.32.3"},
    "go": {"HTTP_USER_AGENT": "Go-http-client/1.1"},
    "no user agent": {"HTTP_USER_AGENT": ""},
}


@pytest.mark.parametrize("headers", NOT_COUNTED.values(), ids=NOT_COUNTED.keys())
def test_choices_not_made_by_a_visitor_who_may_be_counted_still_redirect_but_count_nothing(
    buffer, image_factory, headers
):
    source, target = image_factory(1), image_factory(2)
    response = visitor().get(choice_url(source, 1, "visual", target), **headers)
    assert response.status_code == 302
    assert buffer.length() == 0
    assert flush().events == 0 and pair_days() == []


def test_head_is_answered_and_not_counted(buffer):
    response = visitor().head(choice_url(7, 1, "visual", 8))
    assert response.status_code == 302
    assert buffer.length() == 0


def test_one_client_following_the_same_link_1000_times_counts_once(buffer, image_factory):
    source, target = image_factory(1), image_factory(2)
    url = choice_url(source, 2, "visual", target)
    clicker = visitor()
    for _ in range(1000):
        response = clicker.get(url)
        assert response.status_code == 302
        assert response["Location"] == reverse("gallery:image-detail", args=[target.pk])
    visitor().get(url)  # another visitor's choice of the same link still counts

    flush()
    assert pair_days() == [(source.pk, target.pk, "visual", 2, 0, 2)]


def test_one_client_counts_at_most_its_overall_rate(buffer, settings):
    settings.CLICKS_RATE = "5/m"
    clicker = visitor()
    for target in range(100, 120):  # 20 different pairs
        assert clicker.get(choice_url(99, 1, "visual", target)).status_code == 302
    assert buffer.length() == 5


@pytest.mark.parametrize(
    "path",
    [
        "/go/1/1/popular/2/",  # no such variant
        "/go/1/0/visual/2/",  # positions start at 1
        "/go/1/51/visual/2/",  # past RECOMMENDATIONS_K_MAX
        f"/go/1/1/visual/{2**63}/",  # past PostgreSQL's bigint
        f"/go/{2**63}/1/visual/2/",
        f"/go/1/{10**30}/visual/2/",
        "/go/1/1/visual/" + "9" * 5000 + "/",  # past Python's own limit for reading an int
        "/go/1/1/visual/1/",  # no list links an image to itself
        "/go/0/1/visual/2/",
        "/go/-1/1/visual/2/",
        "/go/1/1/visual/",
        "/go/1/1/popular/visual/2/",  # no such comparison
        "/go/1/1/interleaved/popular/2/",
        "/go/1/1/interleaved/visual/1/",
        "/go/1/1/single/interleaved/visual/2/",
    ],
)
def test_links_no_list_could_hold_get_a_404_never_a_500(buffer, path):
    response = visitor().get(path)
    assert response.status_code == 404
    assert buffer.length() == 0


def test_a_choice_cannot_be_posted(buffer):
    assert visitor().post(choice_url(1, 1, "visual", 2)).status_code == 405
    assert buffer.length() == 0


# --- Impressions: a page names the list it shows -----------------------------------------------


def shown_url(source, *targets) -> str:
    items = ",".join(f"{target.pk}:{variant}" for target, variant in targets)
    return reverse("shown", args=[source.pk]) + "?list=" + items


@pytest.mark.urls("tests.clicks.urls")
def test_the_shown_header_never_reaches_a_client_and_a_cached_page_still_counts(buffer, image_factory):
    source, near, far = image_factory(1), image_factory(2), image_factory(3)
    url = shown_url(source, (near, "visual"), (far, "hybrid"))

    computed = visitor().get(url)
    with CaptureQueriesContext(connection) as queries:
        cached = visitor().get(url)

    assert computed.status_code == cached.status_code == 200
    assert len(queries) == 0  # the second page came whole from the page cache
    assert SHOWN_HEADER not in computed and SHOWN_HEADER not in cached
    assert buffer.length() == 2
    flush()
    assert pair_days() == [(source.pk, near.pk, "visual", 1, 2, 0), (source.pk, far.pk, "hybrid", 2, 2, 0)]


@pytest.mark.urls("tests.clicks.urls")
def test_impressions_are_sent_in_batches_and_none_is_lost(buffer, image_factory, settings):
    settings.CLICKS_IMPRESSION_BATCH = 3
    settings.CLICKS_BATCH_SECONDS = 60
    source, near = image_factory(1), image_factory(2)
    url = shown_url(source, (near, "visual"))
    visitor().get(url)
    visitor().get(url)
    assert buffer.length() == 0  # gathered in this process, not sent yet
    visitor().get(url)
    assert buffer.length() == 3  # the third page sent all three in one round trip
    visitor().get(url)
    buffer.send_pending()  # what a stopping process does at exit
    flush()
    assert pair_days() == [(source.pk, near.pk, "visual", 1, 4, 0)]


@pytest.mark.urls("tests.clicks.urls")
def test_a_gathered_impression_waits_no_longer_than_the_batch_time(buffer, image_factory, settings):
    settings.CLICKS_IMPRESSION_BATCH = 100
    settings.CLICKS_BATCH_SECONDS = 0
    source, near = image_factory(1), image_factory(2)
    visitor().get(shown_url(source, (near, "visual")))
    assert buffer.length() == 1


@pytest.mark.urls("tests.clicks.urls")
def test_an_impression_keeps_the_comparison_its_list_was_made_by(buffer, image_factory):
    source, near, far = image_factory(1), image_factory(2), image_factory(3)
    url = shown_url(source, (near, "hybrid"), (far, "visual")) + "&comparison=interleaved"
    visitor().get(url)
    visitor().get(url)  # from the page cache
    flush()
    assert pair_days_by_comparison() == [
        (source.pk, near.pk, "interleaved", "hybrid", 1, 2, 0),
        (source.pk, far.pk, "interleaved", "visual", 2, 2, 0),
    ]


@pytest.mark.urls("tests.clicks.urls")
@pytest.mark.parametrize("headers", NOT_COUNTED.values(), ids=NOT_COUNTED.keys())
def test_pages_not_asked_for_by_a_visitor_who_may_be_counted_count_no_impression(buffer, image_factory, headers):
    source, near = image_factory(1), image_factory(2)
    url = shown_url(source, (near, "visual"))
    for _ in range(2):  # computed, then from the page cache
        response = visitor().get(url, **headers)
        assert response.status_code == 200 and SHOWN_HEADER not in response
    assert buffer.length() == 0


@pytest.mark.urls("tests.clicks.urls")
def test_a_head_request_and_a_revalidation_count_no_impression_and_never_see_the_header(buffer, image_factory):
    source, near = image_factory(1), image_factory(2)
    url = shown_url(source, (near, "visual"))
    page = visitor().get(url)
    head = visitor().head(url)
    revalidated = visitor().get(url, HTTP_IF_NONE_MATCH=page["ETag"])
    assert head.status_code == 200 and revalidated.status_code == 304
    assert SHOWN_HEADER not in head and SHOWN_HEADER not in revalidated
    assert buffer.length() == 1  # the first page only


@pytest.mark.urls("tests.clicks.urls")
def test_recorded_events_show_in_the_metrics(buffer, image_factory, client):
    source, near = image_factory(1), image_factory(2)
    before = scrape(client)
    visitor().get(shown_url(source, (near, "visual")))
    visitor().get(choice_url(source, 1, "visual", near))
    after = scrape(client)

    for kind in ("impression", "choice"):
        recorded = value(after, "imagerec_click_events_recorded_total", kind=kind)
        assert recorded == value(before, "imagerec_click_events_recorded_total", kind=kind) + 1
    assert value(after, "imagerec_click_events_buffered", state="waiting") == 2


def test_recording_can_be_turned_off(buffer, settings, image_factory):
    settings.CLICKS_RECORDING = False
    source, target = image_factory(1), image_factory(2)
    assert visitor().get(choice_url(source, 1, "visual", target)).status_code == 302
    assert buffer.length() == 0


def test_a_browser_is_counted(buffer):
    # The negative cases above would pass if nothing were ever counted.
    assert visitor(HTTP_USER_AGENT=BROWSER).get(choice_url(1, 1, "visual", 2)).status_code == 302
    assert buffer.length() == 1
