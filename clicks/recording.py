"""What a visitor was shown and what they chose, as events buffered in Redis.

Two kinds of event, each a short string holding a UTC day and image ids, never anything about
who asked:

- an impression: the list shown under image ``source`` (``i|2026-12-03|12;34v,56h;i``: image 34
  at position 1, put there by the visual variant, image 56 at position 2 by the hybrid one, in
  an interleaved list);
- a choice: the link at ``position`` of ``source``'s list followed to ``target``
  (``c|2026-12-03|12|2|hybrid|56|interleaved``).

The comparison that made the list (``COMPARISON_CODES``) comes last; events without it, written
before it was recorded, count as "single".

The web process only appends them to a Redis list (the cache's server, one round trip);
``clicks.services.events_flush`` parses and aggregates them into ``PairDay`` rows. A page never
waits on, or fails because of, recording: when Redis is unreachable or the list is full the
event is dropped and counted in ``imagerec_click_events_lost_total``.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import re
import threading
import time

from django.conf import settings
from django.core.cache import caches
from prometheus_client import Counter

logger = logging.getLogger(__name__)

# The page sets it, the page cache keeps it with the page, ImpressionMiddleware removes it.
SHOWN_HEADER = "X-Imagerec-Shown"

# One letter per variant in an impression, so a 50-image list stays a few hundred bytes.
VARIANT_CODES = {"visual": "v", "hybrid": "h"}
VARIANTS_BY_CODE = {code: variant for variant, code in VARIANT_CODES.items()}
# How the list was made: both variants interleaved, one of them by the source's A/B arm, or the
# one a page asked for by name (clicks.models.Comparison).
COMPARISON_CODES = {"interleaved": "i", "ab": "a", "single": "s"}
COMPARISONS_BY_CODE = {code: comparison for comparison, code in COMPARISON_CODES.items()}
# PostgreSQL's bigint: a larger id names no image and could not even be written.
LARGEST_ID = 2**63 - 1

# What a non-browser names itself: crawlers, link checkers, scripts, headless browsers. Matched
# against the lower-cased user agent: 1.3 us a request, where re.IGNORECASE took 16.
NOT_A_BROWSER = re.compile(
    r"bot|crawl|spider|slurp|scrap|fetch|preview|monitor|check|archiv|curl|wget|python|httpx|aiohttp"
    r"|go-http-client|java/|okhttp|libwww|perl|ruby|php|node-fetch|axios|headless|phantomjs|selenium"
    r"|puppeteer|playwright|lighthouse|facebookexternalhit|whatsapp|embedly"
)

# After Redis fails, events are dropped without trying for this long: a server that drops
# packets would otherwise add its socket timeout to every page.
UNAVAILABLE_PAUSE_SECONDS = 2.0


@functools.cache
def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when the server is unreachable, slow or refuses."""
    import redis

    return (redis.RedisError, OSError)


@functools.cache
def _counters() -> tuple[Counter, Counter]:
    """Made on first use, not at import (gunicorn's multiprocess files)."""
    return (
        Counter(
            "imagerec_click_events_recorded",
            "Impressions and choices appended to the buffer the flush writes to PostgreSQL.",
            ["kind"],
        ),
        Counter(
            "imagerec_click_events_lost",
            "Impressions and choices dropped: Redis unreachable or the buffer full (CLICKS_BUFFER_MAX).",
            ["kind"],
        ),
    )


def events_recorded() -> Counter:
    return _counters()[0]


def events_lost() -> Counter:
    return _counters()[1]


def shown_header_value(*, source_id: int, shown: list[tuple[int, str]], comparison: str = "single") -> str:
    """The ``X-Imagerec-Shown`` value for ``source_id``'s list: ``shown`` is its target ids in
    list order (position 1 first), each with the variant that put it there; ``comparison`` how
    the list was made ("interleaved", "ab", or "single": a variant asked for by name)."""
    items = ",".join(f"{int(target_id)}{VARIANT_CODES[variant]}" for target_id, variant in shown)
    return f"{int(source_id)};{items};{COMPARISON_CODES[comparison]}"


def request_may_be_counted(request) -> bool:
    """Whether a visitor's browser, and not a crawler, a script or a prefetch, made this GET,
    and the visitor has not asked not to be tracked (DNT, Global Privacy Control)."""
    if request.method != "GET":
        return False
    meta = request.META
    if meta.get("HTTP_DNT") == "1" or meta.get("HTTP_SEC_GPC") == "1":
        return False
    if "prefetch" in meta.get("HTTP_SEC_PURPOSE", "") or "prefetch" in meta.get("HTTP_PURPOSE", "").lower():
        return False
    if "prefetch" in meta.get("HTTP_X_MOZ", "").lower() or meta.get("HTTP_X_PURPOSE", "").lower() == "preview":
        return False
    user_agent = meta.get("HTTP_USER_AGENT", "")
    return user_agent.startswith("Mozilla/") and NOT_A_BROWSER.search(user_agent.lower()) is None


def today() -> str:
    """The UTC day an event belongs to, as PostgreSQL reads a date."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def impression_event(*, shown_header: str) -> str:
    return f"i|{today()}|{shown_header}"


def choice_event(*, source_id: int, position: int, variant: str, target_id: int, comparison: str) -> str:
    return f"c|{today()}|{source_id}|{position}|{variant}|{target_id}|{comparison}"


class EventBuffer:
    """The Redis list events wait in: appended by web processes, read and trimmed from its head
    by the one flush that holds the lock. Its own client (short timeouts, one retry without
    backoff) on the cache's server, under the cache's key prefix."""

    def __init__(self, *, location: str, key: str, timeout: float):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.key = key
        self.client = redis.Redis.from_url(
            location,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._unavailable_until = 0.0
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str]] = []
        self._pending_since = 0.0
        atexit.register(self.send_pending)

    def push(self, event: str, *, kind: str, batch: int = 1) -> bool:
        """Append ``event``: at once when ``batch`` is 1; otherwise gathered with this process's
        next events and sent with them in one round trip once there are ``batch`` of them or
        the oldest has waited CLICKS_BATCH_SECONDS (and when the process exits). False (and
        counted lost) when Redis is unreachable or the list full."""
        with self._lock:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((event, kind))
            if len(self._pending) < batch and time.monotonic() - self._pending_since < settings.CLICKS_BATCH_SECONDS:
                return True
            pending, self._pending = self._pending, []
        return self._send(pending)

    def send_pending(self) -> None:
        """Send what this process gathered (at exit: a worker stopping loses none of it)."""
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            self._send(pending)

    def _send(self, pending: list[tuple[str, str]]) -> bool:
        def count(counter, events) -> None:
            for kind, number in collections.Counter(kind for _, kind in events).items():
                counter().labels(kind=kind).inc(number)

        if time.monotonic() < self._unavailable_until:
            count(events_lost, pending)
            return False
        try:
            # One round trip; the trim in the same transaction drops the new events again when
            # the list was already full, so the list never holds more than the bound.
            pipeline = self.client.pipeline(transaction=True)
            pipeline.rpush(self.key, *(event for event, _ in pending))
            pipeline.ltrim(self.key, 0, settings.CLICKS_BUFFER_MAX - 1)
            length, _ = pipeline.execute()
        except redis_errors():
            self.pause()
            count(events_lost, pending)
            return False
        dropped = min(len(pending), max(0, length - settings.CLICKS_BUFFER_MAX))
        count(events_recorded, pending[: len(pending) - dropped])
        count(events_lost, pending[len(pending) - dropped :])
        return dropped == 0

    def pause(self) -> None:
        with self._lock:
            if time.monotonic() >= self._unavailable_until:
                logger.warning("Redis unreachable: visitors' impressions and choices are dropped for a while")
            self._unavailable_until = time.monotonic() + UNAVAILABLE_PAUSE_SECONDS

    def head(self, count: int) -> list[str]:
        return self.client.lrange(self.key, 0, count - 1)

    def drop_head(self, count: int) -> None:
        self.client.ltrim(self.key, count, -1)

    def length(self) -> int:
        return self.client.llen(self.key)

    def lock(self, *, timeout: float):
        """A lock only one flush at a time holds (two would write the same events twice)."""
        return self.client.lock(self.key + ":flush", timeout=timeout, blocking=False)


@functools.lru_cache(maxsize=8)
def _buffer_for(location: str, key: str, timeout: float) -> EventBuffer:
    return EventBuffer(location=location, key=key, timeout=timeout)


def event_buffer() -> EventBuffer | None:
    """This process's buffer on the cache's Redis (one per configured location), or None when
    the cache is not Redis (a local run without one)."""
    cache_settings = settings.CACHES["default"]
    location = cache_settings.get("LOCATION") or ""
    if isinstance(location, (list, tuple)):
        location = location[0] if location else ""
    location = location.split(",")[0]  # several servers: the first takes the writes
    if not location.startswith(("redis://", "rediss://", "unix://")):
        return None
    timeout = float(cache_settings.get("OPTIONS", {}).get("socket_timeout", 0.5))
    return _buffer_for(location, caches["default"].make_key("clicks:events"), timeout)


def event_record(event: str, *, kind: str, batch: int = 1) -> bool:
    """Append an event to the buffer (``batch``: ``EventBuffer.push``); never raises, whatever
    Redis does."""
    buffer = event_buffer()
    if buffer is None:
        events_lost().labels(kind=kind).inc()
        return False
    return buffer.push(event, kind=kind, batch=batch)


def buffered_event_counts() -> dict[str, float]:
    """The buffer's length, for /metrics (nothing when Redis cannot be reached)."""
    buffer = event_buffer()
    if buffer is None:
        return {}
    try:
        return {"waiting": buffer.length()}
    except redis_errors():
        return {}
