"""The cache's generation and what is kept under it.

Every cached value (a whole response, a neighbour list, a gallery's count) is valid for one
generation. A change a visitor could see bumps the generation once its transaction commits:
older values are never read again and leave Redis by their timeout (or its LRU policy). A bump
is one ``INCR``, whatever the number of pages cached, so a bulk load costs one per batch.

What ingestion does (a new image, its embedding status, its vector, its renditions) may be given
a bound on staleness instead (PAGE_CACHE_INGEST_STALE_SECONDS): such a change only marks the
generation dirty, and the first reader after the bound bumps it. During a bulk load cached pages
then live that long instead of until the next batch. 0 (the default) bumps at once, like every
edit (a caption, tags, a deletion, a model switch) always does.

The cache is an optimisation: when Redis is unreachable, pages are computed without it.
"""

from __future__ import annotations

import logging
import time
from functools import cache as memoise

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction

logger = logging.getLogger(__name__)

GENERATION_KEY = "pages:generation"
# When an ingestion change was first left unannounced (a Unix time), while the generation is dirty.
DIRTY_KEY = "pages:dirty-since"


@memoise
def cache_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (ConnectionError, OSError, TimeoutError, redis.RedisError)


def _now() -> float:
    return time.time()


def generation_from(values: dict) -> int | None:
    """The generation from a ``get_many`` that asked for GENERATION_KEY and DIRTY_KEY.

    Starts a generation when there is none; settles a dirty one whose bound has passed.
    """
    generation = values.get(GENERATION_KEY)
    dirty_since = values.get(DIRTY_KEY)
    if generation is None:
        cache.add(GENERATION_KEY, 1, timeout=None)
        generation = cache.get(GENERATION_KEY, 1)
    if dirty_since is not None and _now() - dirty_since >= settings.PAGE_CACHE_INGEST_STALE_SECONDS:
        # Whoever deletes the mark bumps; a second reader racing here finds it gone.
        if cache.delete(DIRTY_KEY):
            generation = _incr()
    return int(generation)


def generation() -> int | None:
    """The current generation, or None when the cache cannot be reached."""
    try:
        return generation_from(cache.get_many([GENERATION_KEY, DIRTY_KEY]))
    except cache_errors():
        logger.warning("Cache unavailable: pages are computed without it")
        return None


def _incr() -> int | None:
    try:
        return cache.incr(GENERATION_KEY)
    except ValueError:  # no generation yet: the next reader starts one
        return None


def _bump() -> None:
    try:
        _incr()
    except cache_errors():
        logger.warning("Cache unavailable: could not drop the cached pages", exc_info=True)


def _mark_dirty() -> None:
    try:
        cache.add(DIRTY_KEY, _now(), timeout=None)
    except cache_errors():
        logger.warning("Cache unavailable: could not drop the cached pages", exc_info=True)


def generation_bump(*, ingest: bool = False) -> None:
    """Drop every cached value once the current transaction commits (at once outside one).

    Also now, so that the rest of this transaction reads nothing cached from before it; after
    the commit, so that a value another request computed from the old rows in between is not
    kept either. ``ingest``: a change ingestion makes by the thousand, which
    PAGE_CACHE_INGEST_STALE_SECONDS may delay.
    """
    callback = _mark_dirty if ingest and settings.PAGE_CACHE_INGEST_STALE_SECONDS > 0 else _bump
    if callback is _bump:
        _bump()
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(func is callback for _, func, _ in connection.run_on_commit):
        return  # one bump on commit, however many rows the transaction changes
    transaction.on_commit(callback)


def scope_key(url_kwargs: dict) -> str | None:
    """The key of the version of every page whose URL names these arguments (``pk=12``): the
    image page, its JSON and its similar list share one. None for a URL without arguments."""
    if not url_kwargs:
        return None
    return "pages:scope:" + ",".join(f"{name}={value}" for name, value in sorted(url_kwargs.items()))


def pages_drop(**url_kwargs) -> None:
    """Drop the kept pages whose URL names exactly these arguments (``pages_drop(pk=12)``),
    leaving every other page kept: for a change only those pages show. Call it after the change
    commits. The version has no timeout: one that expired and started again could match a page
    kept under its earlier value."""
    key = scope_key(url_kwargs)
    try:
        try:
            cache.incr(key)
        except ValueError:  # none yet: pages kept so far hold version 0
            if not cache.add(key, 1, timeout=None):
                cache.incr(key)
    except cache_errors():
        logger.warning("Cache unavailable: could not drop the pages of %s", url_kwargs, exc_info=True)


def generation_bump_now() -> None:
    """Drop every cached value now, outside any transaction (a setting changed)."""
    _bump()


def is_bump(callback) -> bool:
    """Whether an on-commit callback is the cache's (for tests counting the tasks a commit sends)."""
    return callback in (_bump, _mark_dirty)


def _wal_position(alias: str, function: str) -> int | None:
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT {function}() - '0/0'::pg_lsn")
        (position,) = cursor.fetchone()
    return None if position is None else int(position)


def replicas_caught_up(generation: int) -> bool:
    """Whether a value computed now from a read replica may be kept under ``generation``.

    True without replicas. With them, a replica can lag behind the commit that started the
    generation, and a page read from it then would be kept as if it were current. The first
    asker records the primary's WAL position for the generation (at least that of every commit
    that bumped it: a bump follows its commit); a value is kept once every replica has
    replayed that far. Costs a query per replica on a miss, none on a hit.
    """
    aliases = [alias for alias in settings.DATABASES if alias.startswith("replica_")]
    if not aliases:
        return True
    key = f"pages:wal:{generation}"
    position = cache.get(key)
    if position is None:
        cache.add(key, _wal_position("default", "pg_current_wal_lsn"), timeout=settings.PAGE_CACHE_SECONDS)
        position = cache.get(key)
    for alias in aliases:
        replayed = _wal_position(alias, "pg_last_wal_replay_lsn")
        if replayed is None or position is None or replayed < position:
            return False
    return True


def cached(key: str, compute, *, timeout: int | None = None):
    """``compute()``'s value, from the cache when it holds ``key`` for this generation."""
    current = generation()
    if current is None:
        return compute()
    full_key = f"values:{current}:{key}"
    try:
        value = cache.get(full_key)
    except cache_errors():
        return compute()
    if value is None:
        value = compute()
        try:
            if replicas_caught_up(current):
                cache.set(full_key, value, timeout=settings.PAGE_CACHE_SECONDS if timeout is None else timeout)
        except cache_errors():
            pass
    return value
