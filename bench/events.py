"""Visitors' impressions and choices into PostgreSQL: can the flush keep up, and with how much to spare?

    .venv/bin/python bench/events.py                         # 2,000, 5,000 and 10,000 events/s offered
    .venv/bin/python bench/events.py --rates 2000 --seconds 60
    .venv/bin/python bench/events.py --report-only

A producer process appends events to the Redis buffer as gunicorn's workers do
(``clicks.recording.EventBuffer.push``, CLICKS_IMPRESSION_BATCH events a round trip) at a
fixed offered rate: per page view one impression (a list of 10 targets under a source) and,
nine times in ten, a choice, as the simulator's visitors make them. The flush runs as beat
runs it, ``clicks.services.events_flush`` every CLICKS_FLUSH_SECONDS, here in this process.
The sources are 10,000 images, each with a fixed list of 30 candidates that its pages show 10
of, so counts fall on the same pairs again as on a real site.

Measured per offered rate: the events written per second from the first one offered until the
buffer is empty again, how long after the producer stopped that was (within one
CLICKS_FLUSH_SECONDS: the flush keeps up), the buffer's length before each flush, and the
share of the time the flush ran (a flush runs until the buffer is empty); then the capacity:
a full buffer flushed as fast as it goes.
Results go to ``bench/out/events.json`` and the ``events.*`` regions of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time

import common
from common import log

RESULTS = "events.json"
DATA_DIR = common.ROOT / ".devdata" / "bench-events"
IMAGES = 10_000
CANDIDATES = 30
LIST_SIZE = 10
CHOICE_SHARE = 0.9
CAPACITY_EVENTS = 200_000
GOAL_RATE = 2_000


def _page_events(rng: random.Random, lists: list[list[int]]) -> list[str]:
    """One page view's events, as the site writes them: the impression of an interleaved list,
    and nine times in ten the choice of one of its items."""
    from clicks.recording import choice_event, impression_event, shown_header_value

    source = rng.randrange(1, IMAGES + 1)
    shown = [(target, "hybrid" if place % 2 else "visual") for place, target in
             enumerate(rng.sample(lists[source - 1], LIST_SIZE))]
    header = shown_header_value(source_id=source, shown=shown, comparison="interleaved")
    events = [impression_event(shown_header=header)]
    if rng.random() < CHOICE_SHARE:
        position = rng.randrange(1, LIST_SIZE + 1)
        target, variant = shown[position - 1]
        events.append(choice_event(
            source_id=source, position=position, variant=variant, target_id=target, comparison="interleaved"
        ))
    return events


def _candidate_lists(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(1, IMAGES + 1), CANDIDATES) for _ in range(IMAGES)]


def _produce(environment: dict, rate: float, seconds: float, sent) -> None:
    """A web process's share of the site's events: ``rate`` a second for ``seconds``."""
    os.environ.update(environment)
    import django

    django.setup()
    from django.conf import settings

    from clicks.recording import event_buffer

    buffer = event_buffer()
    rng, lists = random.Random(1), _candidate_lists(2)
    started, count = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed)
        while count < due:
            for event in _page_events(rng, lists):
                kind = "impression" if event.startswith("i") else "choice"
                buffer.push(event, kind=kind, batch=settings.CLICKS_IMPRESSION_BATCH)
                count += 1
        time.sleep(0.002)
    buffer.send_pending()
    sent.value = count


def _offered(environment: dict, rate: int, seconds: float) -> dict:
    from django.conf import settings

    from clicks.models import PairDay
    from clicks.recording import event_buffer
    from clicks.services import events_flush

    buffer = event_buffer()
    buffer.client.delete(buffer.key)
    PairDay.objects.all().delete()
    sent = multiprocessing.Value("q", 0)
    producer = multiprocessing.Process(target=_produce, args=(environment, rate, seconds, sent))
    started = time.monotonic()
    producer.start()
    lengths, flushes, written = [], [], 0
    next_flush = started + settings.CLICKS_FLUSH_SECONDS
    while producer.is_alive() or buffer.length():
        time.sleep(max(0.0, next_flush - time.monotonic()))
        next_flush += settings.CLICKS_FLUSH_SECONDS
        lengths.append(buffer.length())
        result = events_flush()
        flushes.append(result.seconds)
        written += result.events
        if not producer.is_alive() and time.monotonic() - started > seconds * 3:
            break
    producer.join()
    elapsed = time.monotonic() - started
    return {
        "offered": rate,
        "sent": sent.value,
        "written": written,
        # From the first event offered until the buffer was empty again: a flush that keeps
        # up ends within one CLICKS_FLUSH_SECONDS of the producer.
        "seconds": round(elapsed, 1),
        "behind_seconds": round(elapsed - seconds, 1),
        "flush_every": settings.CLICKS_FLUSH_SECONDS,
        "written_per_second": round(written / elapsed),
        "buffer_before_flush": lengths,
        "buffer_max": max(lengths),
        "flush_seconds_max": round(max(flushes), 3),
        # A flush runs until the buffer is empty (or its time budget ends): its share of the
        # time is how close the offered rate is to the flush's capacity.
        "busy": round(sum(flushes) / elapsed, 3),
        "rows": PairDay.objects.count(),
    }


def _capacity() -> dict:
    """A full buffer, flushed back to back: the most events a second one flush process writes."""
    from clicks.recording import event_buffer
    from clicks.services import events_flush

    buffer = event_buffer()
    buffer.client.delete(buffer.key)
    rng, lists = random.Random(3), _candidate_lists(2)
    events: list[str] = []
    while len(events) < CAPACITY_EVENTS:
        events += _page_events(rng, lists)
    for start in range(0, len(events), 10_000):
        buffer.client.rpush(buffer.key, *events[start : start + 10_000])
    started = time.monotonic()
    result = events_flush(time_budget=3600)
    seconds = time.monotonic() - started
    return {"events": result.events, "seconds": round(seconds, 2), "per_second": round(result.events / seconds)}


def run(options) -> dict:
    environment = common.django_setup(DATA_DIR, broker=True)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM gallery_image")
        if cursor.fetchone()[0] < IMAGES:
            log(f"loading {IMAGES:,} image rows")
            cursor.execute("TRUNCATE gallery_image CASCADE")
            common.images_insert(cursor, IMAGES)
        machine = common.machine_description(cursor)
    offered = []
    for rate in options.rates:
        log(f"offering {rate:,} events/s for {options.seconds:.0f} s")
        offered.append(_offered(environment, rate, options.seconds))
        log(f"  {offered[-1]}")
    capacity = _capacity()
    log(f"capacity: {capacity}")
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "seconds": options.seconds,
        "offered": offered,
        "capacity": capacity,
    }
    common.save(RESULTS, result)
    return result


def report(result: dict) -> None:
    rows = [
        [
            f"{run['offered']:,}", f"{run['written_per_second']:,}", f"{run['behind_seconds']:.1f}",
            f"{run['buffer_max']:,}", f"{run['flush_seconds_max']:.2f}", f"{run['busy']:.0%}", f"{run['rows']:,}",
            "yes" if run["behind_seconds"] <= run["flush_every"] else "no",
        ]
        for run in result["offered"]
    ]
    table = common.table(
        ["offered events/s", "written events/s, until the buffer was empty",
         f"empty again, s after the {result['seconds']:.0f} s offered", "most waiting before a flush",
         "longest flush s", "the flush busy", "daily rows", "keeps up"],
        rows, align="rrrrrrrl",
    )
    capacity = result["capacity"]
    goal = next((run for run in result["offered"] if run["offered"] == GOAL_RATE), None)
    machine = result["machine"]
    values = {
        "events.runs": f"`bench/events.py` ({result['when']})",
        "events.machine": f"{machine['cpu']}, {machine['cores']} cores; PostgreSQL {machine['postgresql']}",
        "events.table": table,
        "events.capacity": f"{capacity['per_second']:,} events/s ({capacity['events']:,} in {capacity['seconds']} s)",
        "events.ratio": f"{capacity['per_second'] / GOAL_RATE:.1f}×",
    }
    if goal is not None:
        values["events.goal"] = (
            f"all {goal['written']:,} events offered in {result['seconds']:.0f} s written, the buffer empty again "
            f"{goal['behind_seconds']:.1f} s after the producer stopped and at most {goal['buffer_max']:,} events before a flush (the events of at most {goal['flush_every']:g} s), the flush busy "
            f"{goal['busy']:.0%} of the time; met"
            if goal["behind_seconds"] <= goal["flush_every"] else
            f"not met: {goal['written_per_second']:,} events/s written of {GOAL_RATE:,} offered, the buffer empty "
            f"again only {goal['behind_seconds']:.0f} s after the producer stopped"
        )
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--report-only", action="store_true")
    options = parser.parse_args()
    result = common.load(RESULTS, None) if options.report_only else run(options)
    if result is None:
        raise SystemExit(f"No results in bench/out/{RESULTS}: run without --report-only first.")
    report(result)


if __name__ == "__main__":
    main()
