"""The flush moves buffered events into daily counts: aggregated, added up, never failing on
a deleted image; and days past retention are forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from clicks import tasks
from clicks.models import PairDay
from clicks.recording import choice_event, event_record, impression_event, shown_header_value
from clicks.services import events_flush
from tests.clicks.helpers import buffer, flush, pair_days  # noqa: F401

pytestmark = pytest.mark.django_db


def shown(source, *targets, comparison="single") -> None:
    """One impression of ``source``'s list: ``targets`` as (image, variant) in list order."""
    header = shown_header_value(
        source_id=source.pk, shown=[(target.pk, variant) for target, variant in targets], comparison=comparison
    )
    assert event_record(impression_event(shown_header=header), kind="impression")


def chosen(source, position, variant, target, comparison="single") -> None:
    event = choice_event(
        source_id=source.pk, position=position, variant=variant, target_id=target.pk, comparison=comparison
    )
    assert event_record(event, kind="choice")


@pytest.fixture
def images(image_factory):
    return [image_factory(seed) for seed in range(4)]


def test_events_are_aggregated_per_pair_position_and_variant_and_two_flushes_add_up(buffer, images):
    a, b, c, d = images
    for _ in range(3):
        shown(a, (b, "visual"), (c, "hybrid"))
    shown(a, (c, "visual"), (b, "hybrid"))
    chosen(a, 2, "hybrid", c)
    shown(d, (a, "visual"))

    first = flush()
    assert first.events == 6 and first.rows == 5
    assert pair_days() == sorted(
        [
            (a.pk, b.pk, "visual", 1, 3, 0),
            (a.pk, c.pk, "hybrid", 2, 3, 1),
            (a.pk, c.pk, "visual", 1, 1, 0),
            (a.pk, b.pk, "hybrid", 2, 1, 0),
            (d.pk, a.pk, "visual", 1, 1, 0),
        ]
    )

    shown(a, (b, "visual"), (c, "hybrid"))
    chosen(a, 2, "hybrid", c)
    chosen(a, 1, "visual", b)
    second = flush()
    assert second.events == 3
    assert PairDay.objects.get(source=a, target=c, variant="hybrid").impressions == 4
    assert PairDay.objects.get(source=a, target=c, variant="hybrid").choices == 2
    assert PairDay.objects.get(source=a, target=b, variant="visual").choices == 1
    assert buffer.length() == 0


def test_each_comparison_keeps_its_own_counts(buffer, images):
    a, b, c, _ = images
    shown(a, (b, "visual"), (c, "hybrid"), comparison="interleaved")
    shown(a, (b, "visual"), (c, "hybrid"), comparison="interleaved")
    shown(a, (b, "hybrid"), (c, "hybrid"), comparison="ab")
    shown(a, (b, "visual"), (c, "visual"))  # ?variant=visual
    chosen(a, 2, "hybrid", c, comparison="interleaved")
    chosen(a, 1, "visual", b)

    flush()
    rows = PairDay.objects.values_list("target_id", "comparison", "variant", "position", "impressions", "choices")
    assert sorted(rows) == sorted(
        [
            (b.pk, "interleaved", "visual", 1, 2, 0),
            (c.pk, "interleaved", "hybrid", 2, 2, 1),
            (b.pk, "ab", "hybrid", 1, 1, 0),
            (c.pk, "ab", "hybrid", 2, 1, 0),
            (b.pk, "single", "visual", 1, 1, 1),
            (c.pk, "single", "visual", 2, 1, 0),
        ]
    )


def test_events_written_before_the_comparison_was_recorded_count_as_single(buffer, images):
    a, b, _, _ = images
    today = datetime.now(UTC).date().isoformat()
    buffer.client.rpush(buffer.key, f"i|{today}|{a.pk};{b.pk}h", f"c|{today}|{a.pk}|1|hybrid|{b.pk}")
    assert flush().malformed == 0
    assert list(PairDay.objects.values_list("comparison", "variant", "impressions", "choices")) == [
        ("single", "hybrid", 1, 1)
    ]


def test_small_batches_write_the_same_counts_as_one(buffer, images):
    a, b, c, _ = images
    for _ in range(7):
        shown(a, (b, "visual"), (c, "visual"))
        chosen(a, 1, "visual", b)
    result = events_flush(batch_size=3)
    assert result.events == 14
    assert pair_days() == [(a.pk, b.pk, "visual", 1, 7, 7), (a.pk, c.pk, "visual", 2, 7, 0)]


def test_events_of_a_deleted_image_are_dropped_quietly(buffer, images):
    a, b, c, d = images
    shown(a, (b, "visual"), (c, "visual"))
    chosen(a, 2, "visual", c)
    shown(c, (a, "visual"))
    c.delete()

    result = flush()
    assert result.events == 3 and result.dropped_rows == 2
    assert pair_days() == [(a.pk, b.pk, "visual", 1, 1, 0)]
    assert buffer.length() == 0


def test_unreadable_events_are_dropped_and_the_rest_written(buffer, images):
    a, b, _, _ = images
    for junk in (
        "", "x|2026-01-01|1", "i|yesterday|1;2v", f"i|2026-01-01|{a.pk};{b.pk}q", "c|2026-01-01|1|99|visual|2",
        f"i|2026-01-01|{a.pk};{b.pk}v;x",  # no such comparison
        f"i|2026-01-01|{a.pk};{b.pk}v;i;i",
        f"c|2026-01-01|{a.pk}|1|visual|{b.pk}|popular",
        f"c|2026-01-01|{a.pk}|1|visual|{b.pk}|ab|ab",
    ):
        buffer.client.rpush(buffer.key, junk)
    chosen(a, 1, "visual", b)
    result = flush()
    assert result.malformed == 9
    assert pair_days() == [(a.pk, b.pk, "visual", 1, 0, 1)]
    assert buffer.length() == 0


def test_days_past_retention_are_deleted(buffer, images, settings):
    settings.CLICKS_RETENTION_DAYS = 7
    a, b, _, _ = images
    today = datetime.now(UTC).date()
    for days_ago in (0, 6, 7, 30):
        PairDay.objects.create(day=today - timedelta(days=days_ago), source=a, target=b, variant="visual", position=1)
    result = flush()
    assert result.expired_rows == 2
    assert sorted((today - day).days for day in PairDay.objects.values_list("day", flat=True)) == [0, 6]


def test_one_flush_at_a_time(buffer, images):
    a, b, _, _ = images
    chosen(a, 1, "visual", b)
    lock = buffer.lock(timeout=10)
    assert lock.acquire()
    try:
        assert events_flush().busy
        assert buffer.length() == 1 and pair_days() == []
    finally:
        lock.release()
    assert flush().events == 1


def test_the_beat_task_flushes(buffer, images):
    a, b, _, _ = images
    chosen(a, 1, "visual", b)
    assert tasks.events_flush()["events"] == 1  # the task's own function, in this process
    assert pair_days() == [(a.pk, b.pk, "visual", 1, 0, 1)]


def test_a_flush_with_redis_down_fails_nothing_and_still_expires_old_days(buffer, images, settings):
    a, b, _, _ = images
    old = datetime.now(UTC).date() - timedelta(days=settings.CLICKS_RETENTION_DAYS + 1)
    PairDay.objects.create(day=old, source=a, target=b, variant="visual", position=1)
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    result = events_flush()
    assert result.unavailable and result.expired_rows == 1


def test_an_image_deleted_in_the_database_takes_its_click_rows_with_it(image_factory):
    """The foreign keys cascade in PostgreSQL too: rows a flush adds while an image is being
    deleted cannot make its deletion fail."""
    source, target = image_factory(1), image_factory(2)
    PairDay.objects.create(day="2026-01-01", source=source, target=target, variant="visual", position=1,
                           impressions=3, choices=1)
    with connection.cursor() as cursor:  # only the click rows are left to the database
        cursor.execute("DELETE FROM similarity_embeddingjob WHERE image_id = %s", [target.pk])
        cursor.execute("DELETE FROM gallery_image WHERE id = %s", [target.pk])
    assert not PairDay.objects.exists()
