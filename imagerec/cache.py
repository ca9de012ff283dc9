"""Django's Redis cache backend, with its redis client made once rather than per operation.

``django.core.cache.backends.redis.RedisCacheClient.get_client`` builds a new ``redis.Redis``
around the (shared) connection pool for every cache call, and redis-py's constructor fills a
table of several hundred response callbacks each time: about 0.15 ms of CPU per call, measured
with cProfile on a page answered from the cache, where it was the largest single cost (more
than the round trip to Redis). A client is thread-safe and holds no connection of its own (it
borrows one from the pool per command), so one per pool does the same work.
"""

from __future__ import annotations

from django.core.cache.backends import redis as django_redis


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient
