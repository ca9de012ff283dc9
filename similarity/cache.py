"""Recommendation lists, cached in Redis under the page cache's generation (pagecache.store).

Any change that can move an image into or out of any list (a vector stored or replaced, an image
deleted, tags changed, the serving model switched) bumps that generation (gallery.invalidation
hears of it through similarity.signals), so every older list is never read again. Global rather
than per-image, on purpose: a new image can be the nearest neighbour of any other, so no smaller
set of lists is safe to keep. When Redis is unreachable the pages compute their answer.
"""

from __future__ import annotations

from django.conf import settings

from pagecache import store


def cached(key: str, compute):
    """``compute()``'s value, from the cache when it holds ``key`` for this generation."""
    return store.cached(f"neighbours:{key}", compute, timeout=settings.RECOMMENDATIONS_CACHE_SECONDS)
