"""Gallery pages without a ``COUNT(*)`` per request.

How many images a list holds (all of them, or one tag's) changes only with the changes that
drop cached pages, so it is counted once per cache generation (pagecache.store) and read from
Redis after that: at 100,000 images the count costs more than the page's own rows.
"""

from __future__ import annotations

import hashlib

from django.core.paginator import Paginator
from django.utils.functional import cached_property

from pagecache import store


class CountOncePaginator(Paginator):
    """A Paginator whose count of a queryset is kept per generation (key: the query's SQL)."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is None:  # a list, not a queryset
            return super().count
        digest = hashlib.blake2b(str(query).encode(), digest_size=16).hexdigest()
        return store.cached(f"count:{digest}", lambda: Paginator.count.func(self))
