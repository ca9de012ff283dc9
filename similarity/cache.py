"""Recommendation results, cached in Redis and dropped whenever the vectors they rank change.

Each cached list is keyed by a generation number. Any change that can move an image into or
out of any list (a vector stored or replaced, an image deleted, tags changed) bumps the
generation once its transaction commits, so every older list is simply never read again and
expires on its own. Global rather than per-image invalidation, on purpose: a new image can be
the nearest neighbour of any other, so no smaller set of lists is safe to keep.

The cache is an optimisation: when Redis is unreachable the pages compute their answer.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)

GENERATION_KEY = "neighbours:generation"
CACHE_ERRORS = (ConnectionError, OSError, TimeoutError)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (*CACHE_ERRORS, redis.RedisError)


def neighbours_generation() -> int | None:
    """The current generation, or None when the cache cannot be reached."""
    try:
        generation = cache.get(GENERATION_KEY)
        if generation is None:
            cache.add(GENERATION_KEY, 1, timeout=None)
            generation = cache.get(GENERATION_KEY, 1)
        return int(generation)
    except _redis_errors():
        logger.warning("Cache unavailable: recommendations are computed without it")
        return None


def _bump() -> None:
    try:
        cache.incr(GENERATION_KEY)
    except ValueError:  # no generation yet: the next reader starts one
        pass
    except _redis_errors():
        logger.warning("Cache unavailable: could not drop cached recommendations", exc_info=True)


def neighbours_cache_invalidate() -> None:
    """Drop every cached list now, and again once the current transaction commits.

    Now, so this very transaction reads fresh lists; after the commit, so a list another
    request computed from the old rows in between is not kept either.
    """
    _bump()
    transaction.on_commit(_bump)


def cached(key: str, compute):
    """``compute()``'s value, from the cache when it holds ``key`` for this generation."""
    generation = neighbours_generation()
    if generation is None:
        return compute()
    full_key = f"neighbours:{generation}:{key}"
    try:
        value = cache.get(full_key)
    except _redis_errors():
        return compute()
    if value is None:
        value = compute()
        try:
            cache.set(full_key, value, timeout=settings.RECOMMENDATIONS_CACHE_SECONDS)
        except _redis_errors():
            pass
    return value
