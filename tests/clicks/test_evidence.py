"""Evidence from real daily counts in PostgreSQL, and the lists it ranks: numbers, changes, retention."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from clicks import ranking
from clicks.evidence import evidence_refresh
from clicks.models import PairDay, PairEvidence
from clicks.selectors import recommendations_rank
from clicks.signals import evidence_changed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def ranking_settings(settings):
    settings.CLICKS_PRIOR_STRENGTH = 20.0
    settings.CLICKS_RETENTION_DAYS = 90
    settings.CLICKS_EVIDENCE_WEIGHT = 0.1
    settings.CLICKS_MIN_CHOICES = 3
    settings.CLICKS_MIN_LINKS = 2
    settings.CLICKS_LINK_WEIGHT = 0.1
    settings.CLICKS_LINKS_PER_SOURCE = 30
    settings.CLICKS_EXPLORE_EXPOSURE = 10.0
    return settings


@pytest.fixture
def images(image_factory):
    """images(n) -> n stored images (their ids are what the tables point to)."""
    return lambda count: [image_factory(seed) for seed in range(count)]


def counts(source, target, *, position, impressions, choices=0, days_ago=0, variant="visual"):
    PairDay.objects.create(
        day=timezone.now().date() - datetime.timedelta(days=days_ago), source=source, target=target,
        variant=variant, position=position, impressions=impressions, choices=choices,
    )


def evidence_of(source, target) -> PairEvidence:
    return PairEvidence.objects.get(source=source, target=target)


# --- The aggregation ------------------------------------------------------------------------


def test_choices_exposure_and_scores_from_the_daily_counts(images):
    a, b, c = images(3)
    counts(a, b, position=1, impressions=10, choices=2)
    counts(a, b, position=3, impressions=4, choices=1, days_ago=1, variant="hybrid")
    counts(a, c, position=7, impressions=30)

    assert evidence_refresh() == {a.pk}

    # Exposure: impressions x 1/log2(position + 1): 10 x 1 + 4 x 1/2 for b, 30 x 1/3 for c.
    # The site's rate: 3 choices / 22 examinations = 0.136, kept as 0.14.
    # Scores: (choices + 20 x 0.14) / (0.14 x (exposure + 20)).
    ab, ac = evidence_of(a, b), evidence_of(a, c)
    assert (ab.choices, ab.exposure) == (3, pytest.approx(12.0))
    assert (ac.choices, ac.exposure) == (0, pytest.approx(10.0))
    assert ab.score == pytest.approx(5.8 / 4.48, abs=1e-6)
    assert ac.score == pytest.approx(2.8 / 4.2, abs=1e-6)


def test_a_choice_low_in_the_list_lifts_its_target_above_one_chosen_at_the_top(images):
    a, top, low = images(3)
    counts(a, top, position=1, impressions=10, choices=1)
    counts(a, low, position=8, impressions=10, choices=1)
    evidence_refresh()

    assert evidence_of(a, low).score > evidence_of(a, top).score
    visual = [(top.pk, 0.90), (low.pk, 0.89)]
    assert recommendations_rank(source_id=a.pk, visual=visual, k=2, variant="hybrid") == [
        (low.pk, "hybrid"), (top.pk, "hybrid"),
    ]


# --- Only what changed ---------------------------------------------------------------------


def test_only_the_sources_whose_evidence_changed_are_named(images, django_capture_on_commit_callbacks):
    a, b, d, e = images(4)
    counts(a, b, position=1, impressions=100, choices=12)
    counts(d, e, position=1, impressions=100, choices=12)
    heard = []

    def receiver(sender, source_ids, **kwargs):
        heard.append(source_ids)

    evidence_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert evidence_refresh() == {a.pk, d.pk}
        with django_capture_on_commit_callbacks(execute=True):
            assert evidence_refresh() == set()  # nothing new: nothing rewritten, nothing sent
        before = evidence_of(a, b).updated_at

        # d's list is shown once more; the site's rate (24 / 200.6) still rounds to 0.12.
        counts(d, e, position=2, impressions=1)
        with django_capture_on_commit_callbacks(execute=True):
            assert evidence_refresh() == {d.pk}
    finally:
        evidence_changed.disconnect(receiver)

    assert heard == [{a.pk, d.pk}, {d.pk}]
    assert evidence_of(a, b).updated_at == before
    assert evidence_of(d, e).exposure == pytest.approx(100 + ranking.examination_probability(2))


def test_the_signal_waits_for_the_commit(images, django_capture_on_commit_callbacks):
    a, b = images(2)
    counts(a, b, position=1, impressions=5, choices=1)
    heard = []

    def receiver(sender, source_ids, **kwargs):
        heard.append(source_ids)

    evidence_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            evidence_refresh()
        assert heard == []  # a page dropped before the commit could be cached again from old rows
        callbacks[0]()
    finally:
        evidence_changed.disconnect(receiver)
    assert heard == [{a.pk}]


def test_pictures_joined_by_two_co_chosen_ones_are_linked_whichever_way_visitors_went(images):
    a, b, c, d, stray, x = images(6)
    counts(a, b, position=1, impressions=10, choices=2)  # from a to b
    counts(c, a, position=4, impressions=10, choices=1)  # from c to a
    counts(b, d, position=2, impressions=10, choices=1)  # b and c both lead on to d ...
    counts(d, c, position=3, impressions=10, choices=1)  # ... one of them backwards
    counts(b, stray, position=9, impressions=10, choices=1)  # joined to a through b only
    counts(a, x, position=5, impressions=10)  # shown, never chosen: joins nothing

    evidence_refresh()

    # a and d share b and c; no list ever showed d under a, and the row says so.
    linked = evidence_of(a, d)
    assert (linked.links, linked.choices, linked.exposure, linked.score) == (2, 0, 0.0, 1.0)
    assert evidence_of(d, a).links == 2
    assert not PairEvidence.objects.filter(source=a, target=stray).exists()  # one link: a stray choice
    assert evidence_of(a, x).links == 0
    assert evidence_of(a, b).links == 0  # a and b share no third picture

    # The hybrid list of a finds d though the visual search did not.
    visual = [(b.pk, 0.9), (x.pk, 0.89), (stray.pk, 0.88)]
    assert d.pk in [target for target, _ in recommendations_rank(source_id=a.pk, visual=visual, k=3, variant="hybrid")]


def test_each_source_keeps_its_most_linked_pictures_only(images, ranking_settings):
    ranking_settings.CLICKS_LINKS_PER_SOURCE = 1
    source, middle_1, middle_2, middle_3, twice, thrice = images(6)
    for middle in (middle_1, middle_2, middle_3):
        counts(source, middle, position=1, impressions=5, choices=1)
        counts(middle, thrice, position=1, impressions=5, choices=1)
    for middle in (middle_1, middle_2):
        counts(middle, twice, position=2, impressions=5, choices=1)

    evidence_refresh()

    assert evidence_of(source, thrice).links == 3
    assert not PairEvidence.objects.filter(source=source, target=twice).exists()


# --- Deleted images and retention -----------------------------------------------------------


def test_deleted_images_leave_the_evidence(images):
    a, b, c, d = images(4)
    counts(a, b, position=1, impressions=20, choices=4)
    counts(a, c, position=2, impressions=20, choices=2)
    counts(d, b, position=1, impressions=20, choices=3)
    evidence_refresh()

    c.delete()  # as the admin deletes: the ORM
    d.delete()
    evidence_refresh()

    assert set(PairEvidence.objects.values_list("source_id", "target_id")) == {(a.pk, b.pk)}
    assert evidence_of(a, b).choices == 4


def test_only_the_retained_days_count(images, ranking_settings):
    ranking_settings.CLICKS_RETENTION_DAYS = 7
    a, b, c = images(3)
    counts(a, b, position=1, impressions=10, choices=2, days_ago=6)  # the oldest retained day
    counts(a, b, position=1, impressions=50, choices=9, days_ago=7)  # past retention
    counts(a, c, position=1, impressions=10, choices=1, days_ago=5)
    evidence_refresh()
    assert evidence_of(a, b).choices == 2

    # Three days later (as retention shrinking to 3 days says), nothing of a's is recent: its
    # evidence goes and its list goes back to the visual one.
    ranking_settings.CLICKS_RETENTION_DAYS = 3
    assert evidence_refresh() == {a.pk}
    assert not PairEvidence.objects.exists()


# --- The lists ------------------------------------------------------------------------------


def test_without_evidence_every_variant_shows_the_visual_list(images, django_assert_num_queries):
    source, *others = images(5)
    visual = [(image.pk, 0.9 - place / 100) for place, image in enumerate(others)]
    expected = [image.pk for image in others[:3]]
    with django_assert_num_queries(0):
        shown = recommendations_rank(source_id=source.pk, visual=visual, k=3, variant="visual")
    assert shown == [(target, "visual") for target in expected]
    for variant in ("hybrid", "interleaved", "ab"):
        # One query at most: the source's evidence (none for an A/B source in the visual arm).
        with django_assert_num_queries(0 if variant == "ab" and ranking.ab_arm(source_id=source.pk) == "visual" else 1):
            shown = recommendations_rank(source_id=source.pk, visual=visual, k=3, variant=variant)
        assert [target for target, _ in shown] == expected, variant


def test_the_list_changes_once_evidence_arrives(images, django_assert_num_queries):
    source, *others = images(9)
    visual = [(image.pk, 0.9 - place / 100) for place, image in enumerate(others[:6])]
    favourite, missed = others[4], others[7]  # 5th by similarity; not a visual neighbour at all
    counts(source, favourite, position=5, impressions=40, choices=15)
    counts(source, missed, position=6, impressions=40, choices=12, variant="hybrid")
    counts(source, others[0], position=1, impressions=40, choices=1)
    evidence_refresh()

    with django_assert_num_queries(1):
        hybrid = recommendations_rank(source_id=source.pk, visual=visual, k=3, variant="hybrid")
    assert {target for target, _ in hybrid} >= {favourite.pk, missed.pk}
    assert {team for _, team in hybrid} == {"hybrid"}
    assert recommendations_rank(source_id=source.pk, visual=visual, k=3, variant="visual") == [
        (image.pk, "visual") for image in others[:3]
    ]

    with django_assert_num_queries(1):
        interleaved = recommendations_rank(source_id=source.pk, visual=visual, k=4, variant="interleaved")
    teams = {team: [t for t, credited in interleaved if credited == team] for team in ("visual", "hybrid")}
    assert len(teams["visual"]) == len(teams["hybrid"]) == 2
    assert others[0].pk in teams["visual"]  # the visual list's first, credited to it
    assert favourite.pk in teams["hybrid"] or missed.pk in teams["hybrid"]
    # The same page asked for again shows the same list (the coin is seeded per source and day).
    assert recommendations_rank(source_id=source.pk, visual=visual, k=4, variant="interleaved") == interleaved


def test_ab_shows_each_source_its_own_arm_whole():
    # One source of each arm; no evidence exists, so the lists differ only by their team.
    by_arm = {ranking.ab_arm(source_id=source_id): source_id for source_id in range(1, 50)}
    visual = [(1001, 0.9), (1002, 0.8)]
    for arm, source_id in by_arm.items():
        shown = recommendations_rank(source_id=source_id, visual=visual, k=2, variant="ab")
        assert shown == [(1001, arm), (1002, arm)]
    assert set(by_arm) == {"visual", "hybrid"}


def test_an_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        recommendations_rank(source_id=1, visual=[(2, 0.9)], k=1, variant="random")


# --- The beat task --------------------------------------------------------------------------


def test_beat_sends_a_task_the_workers_know_and_it_refreshes_the_evidence(images, settings):
    from imagerec.celery import app

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "clicks.evidence_refresh" in scheduled
    app.loader.import_default_modules()  # what a worker does at start: the apps' tasks modules

    a, b = images(2)
    counts(a, b, position=2, impressions=8, choices=2)
    assert app.tasks["clicks.evidence_refresh"]() == 1  # called in-process: the task is only an interface
    assert evidence_of(a, b).choices == 2
