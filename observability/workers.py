"""What workers tell the web processes through Redis: that they are alive, and their metrics.

Workers may run on other hosts than the web, so a shared folder cannot carry this; the
broker is the one service every worker and every web process already reaches. Keys, under
``WORKER_STATE_KEY_PREFIX``:

    <prefix>:heartbeats            sorted set: worker name -> Redis's clock at its last beat
    <prefix>:metrics:<worker>      hash: pool process id -> JSON snapshot of its metrics

Ages are measured on Redis's clock, so hosts whose clocks disagree still agree on them. A
worker's metrics stay while it beats and for ``STATE_TTL`` after, then vanish with it.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

# Seconds a stopped worker's heartbeat and metrics are kept (its series then disappear).
STATE_TTL = 3600
# Redis calls from a readiness check or a heartbeat give up quickly when the broker is away.
SOCKET_TIMEOUT = 2.0

_clients: dict[tuple[int, str], redis.Redis] = {}


def redis_client() -> redis.Redis:
    """A client for the broker's Redis, one per process (a forked pool process makes its own)."""
    url = settings.CELERY_BROKER_URL
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        # kombu spells a Unix socket redis+socket:///path; redis-py spells it unix:///path.
        redis_url = "unix://" + url.removeprefix("redis+socket://") if url.startswith("redis+socket://") else url
        client = redis.Redis.from_url(
            redis_url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        _clients[key] = client
    return client


def _key(*parts: str) -> str:
    return ":".join([settings.WORKER_STATE_KEY_PREFIX, *parts])


def _now(client: redis.Redis) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


# --- Heartbeats ---------------------------------------------------------------------------


def heartbeat_send(*, worker: str) -> None:
    client = redis_client()
    now = _now(client)
    with client.pipeline() as pipe:
        pipe.zadd(_key("heartbeats"), {worker: now})
        pipe.zremrangebyscore(_key("heartbeats"), "-inf", now - STATE_TTL)
        pipe.expire(_key("heartbeats"), STATE_TTL)
        # The worker's metrics live as long as it does, even when its pool processes are idle.
        pipe.expire(_key("metrics", worker), STATE_TTL)
        pipe.execute()


def heartbeat_remove(*, worker: str) -> None:
    """A worker that stops cleanly says so at once, instead of letting its heartbeat age."""
    redis_client().zrem(_key("heartbeats"), worker)


def heartbeat_ages() -> dict[str, float]:
    """Seconds since each worker's last heartbeat (those of the last ``STATE_TTL``)."""
    client = redis_client()
    now = _now(client)
    beats = client.zrangebyscore(_key("heartbeats"), now - STATE_TTL, "+inf", withscores=True)
    return {worker.decode(): max(0.0, now - beat) for worker, beat in beats}


class Heartbeat(threading.Thread):
    """Beats every ``interval`` seconds from a worker's main process until ``stop()``.

    A thread, not the worker's event loop: a beat that waits for an unreachable broker must
    not hold up the worker.
    """

    def __init__(self, *, worker: str, interval: float):
        super().__init__(name="imagerec-heartbeat", daemon=True)
        self.worker = worker
        self.interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        failing = False
        while True:
            try:
                heartbeat_send(worker=self.worker)
            except (redis.RedisError, OSError) as error:
                if not failing:
                    logger.warning("Worker heartbeat cannot reach the broker: %s", error)
                failing = True
            else:
                if failing:
                    logger.info("Worker heartbeat reaches the broker again")
                failing = False
            if self._stopping.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=SOCKET_TIMEOUT * 3)
        try:
            heartbeat_remove(worker=self.worker)
        except (redis.RedisError, OSError):
            pass  # it ages out instead


# --- Metric snapshots ---------------------------------------------------------------------


def metrics_snapshot_store(*, worker: str, snapshot: list[dict]) -> None:
    """Replace this process's snapshot; the sum over a worker's processes is what it did."""
    client = redis_client()
    with client.pipeline() as pipe:
        pipe.hset(_key("metrics", worker), str(os.getpid()), json.dumps(snapshot))
        pipe.expire(_key("metrics", worker), STATE_TTL)
        pipe.execute()


def metrics_snapshots() -> dict[str, list[list[dict]]]:
    """Every worker's snapshots, one per pool process that has finished a task."""
    client = redis_client()
    prefix = _key("metrics", "")
    keys = sorted(client.scan_iter(match=prefix + "*", count=1000))
    with client.pipeline() as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = pipe.execute()
    snapshots = {}
    for key, by_process in zip(keys, hashes):
        worker = key.decode().removeprefix(prefix)
        snapshots[worker] = [json.loads(value) for value in by_process.values()]
    return snapshots
