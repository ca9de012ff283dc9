"""Moves the buffered impressions and choices into ``PairDay``, and forgets old days."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection

from .models import PairDay
from .recording import (
    COMPARISON_CODES,
    COMPARISONS_BY_CODE,
    LARGEST_ID,
    VARIANT_CODES,
    VARIANTS_BY_CODE,
    event_buffer,
    redis_errors,
)

logger = logging.getLogger(__name__)

# One flush stops taking new batches after this long; the next one (CLICKS_FLUSH_SECONDS
# later) goes on where it stopped.
FLUSH_TIME_BUDGET_SECONDS = 30.0

# (day, source id, target id, comparison, variant, position) -> [impressions, choices]
Counts = dict[tuple[date, int, int, str, str, int], list[int]]

# Events written before the comparison was recorded say nothing of it.
UNRECORDED_COMPARISON = "single"


@dataclass
class FlushResult:
    events: int = 0  # taken from the buffer (written, or dropped below)
    malformed: int = 0  # events that could not be read, dropped
    rows: int = 0  # PairDay rows created or added to
    dropped_rows: int = 0  # counts for images deleted meanwhile, dropped
    expired_rows: int = 0  # PairDay rows past CLICKS_RETENTION_DAYS, deleted
    seconds: float = 0.0
    busy: bool = False  # another flush holds the lock: this one did nothing
    unavailable: bool = False  # Redis unreachable: nothing taken, the events wait


def _image_id(text: str) -> int:
    value = int(text)
    if not 0 < value <= LARGEST_ID:
        raise ValueError(f"not an image id: {text}")
    return value


def events_aggregate(*, events: list[str]) -> tuple[Counts, int]:
    """Daily counts per (source, target, comparison, variant, position) from raw events, and
    how many of them could not be read (left out)."""
    counts: Counts = defaultdict(lambda: [0, 0])
    days: dict[str, date] = {}
    malformed = 0
    for event in events:
        try:
            kind, day_text, payload = event.split("|", 2)
            day = days.get(day_text)
            if day is None:
                day = days[day_text] = date.fromisoformat(day_text)
            if kind == "i":
                source_text, items, *comparison_code = payload.split(";")
                if len(comparison_code) > 1:
                    raise ValueError(f"more fields than an impression has: {payload}")
                comparison = COMPARISONS_BY_CODE[comparison_code[0]] if comparison_code else UNRECORDED_COMPARISON
                source = _image_id(source_text)
                # Parsed whole before any is counted: a damaged event adds nothing.
                shown = [(_image_id(item[:-1]), VARIANTS_BY_CODE[item[-1]]) for item in items.split(",") if item]
                for position, (target, variant) in enumerate(shown, start=1):
                    counts[(day, source, target, comparison, variant, position)][0] += 1
            elif kind == "c":
                source_text, position_text, variant, target_text, *comparison_field = payload.split("|")
                if len(comparison_field) > 1:
                    raise ValueError(f"more fields than a choice has: {payload}")
                comparison = comparison_field[0] if comparison_field else UNRECORDED_COMPARISON
                if comparison not in COMPARISON_CODES:
                    raise ValueError(f"not a comparison: {comparison}")
                position = int(position_text)
                if variant not in VARIANT_CODES or not 0 < position <= settings.RECOMMENDATIONS_K_MAX:
                    raise ValueError(f"not a list position: {position_text} {variant}")
                key = (day, _image_id(source_text), _image_id(target_text), comparison, variant, position)
                counts[key][1] += 1
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, KeyError, IndexError):
            malformed += 1
    return counts, malformed


def pair_days_add(*, counts: Counts) -> int:
    """Add ``counts`` to their ``PairDay`` rows in one statement; returns the rows written.

    Counts naming an image that no longer exists are left out, not an IntegrityError: the
    images are locked (KEY SHARE) by the statement, so one deleted while it runs is either
    gone before it looks or deleted after it commits (its rows going with it).
    """
    if not counts:
        return 0
    columns = list(zip(*((*key, *values) for key, values in counts.items()), strict=True))
    table = connection.ops.quote_name(PairDay._meta.db_table)
    # The images' table by the foreign key's model: clicks never imports gallery.
    images = connection.ops.quote_name(PairDay._meta.get_field("source").related_model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH batch AS (
                SELECT * FROM unnest(
                    %s::date[], %s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[], %s::smallint[],
                    %s::integer[], %s::integer[]
                ) AS batch(day, source_id, target_id, comparison, variant, position, impressions, choices)
            ), present AS (
                SELECT id FROM {images}
                WHERE id IN (SELECT source_id FROM batch UNION SELECT target_id FROM batch)
                FOR KEY SHARE
            )
            INSERT INTO {table} AS pair (day, source_id, target_id, comparison, variant, position, impressions, choices)
            SELECT batch.day, batch.source_id, batch.target_id, batch.comparison, batch.variant, batch.position,
                   batch.impressions, batch.choices
            FROM batch
            JOIN present AS source ON source.id = batch.source_id
            JOIN present AS target ON target.id = batch.target_id
            ON CONFLICT ON CONSTRAINT clicks_pairday_unique DO UPDATE
            SET impressions = pair.impressions + EXCLUDED.impressions, choices = pair.choices + EXCLUDED.choices
            """,
            [list(column) for column in columns],
        )
        return cursor.rowcount


def pair_days_expire(*, today: date) -> int:
    """Delete the days before the last CLICKS_RETENTION_DAYS (today included)."""
    oldest_kept = today - timedelta(days=settings.CLICKS_RETENTION_DAYS - 1)
    deleted, _ = PairDay.objects.filter(day__lt=oldest_kept).delete()
    return deleted


def events_flush(*, batch_size: int | None = None, time_budget: float = FLUSH_TIME_BUDGET_SECONDS) -> FlushResult:
    """Write the buffered events to ``PairDay``, batch by batch, until the buffer is empty or
    ``time_budget`` seconds have passed; then delete the days past retention.

    Each batch is read from the head of the buffer (LRANGE), aggregated here, written in one
    statement, and only then removed from the buffer (LTRIM): at least once. A flush that dies
    between its commit and its trim has that batch written again by the next one, counting it
    twice; no event is lost. One flush at a time (a lock in Redis), so two never take the same batch.
    """
    started = time.monotonic()
    result = FlushResult()
    batch_size = batch_size or settings.CLICKS_FLUSH_BATCH
    buffer = event_buffer()
    if buffer is not None:
        try:
            lock = buffer.lock(timeout=time_budget + 300)
            if not lock.acquire():
                result.busy = True
                return result
            try:
                while time.monotonic() - started < time_budget:
                    events = buffer.head(batch_size)
                    if not events:
                        break
                    counts, malformed = events_aggregate(events=events)
                    written = pair_days_add(counts=counts)
                    buffer.drop_head(len(events))
                    result.events += len(events)
                    result.malformed += malformed
                    result.rows += written
                    result.dropped_rows += len(counts) - written
            finally:
                lock.release()
        except redis_errors():
            logger.warning("Redis unreachable: buffered clicks wait for the next flush", exc_info=True)
            result.unavailable = True
    if result.malformed:
        logger.warning("%d click events could not be read and were dropped", result.malformed)
    result.expired_rows = pair_days_expire(today=datetime.now(UTC).date())
    result.seconds = time.monotonic() - started
    return result
