"""Readiness: can this site do its work now? Each check says yes, or what is wrong.

The database and the broker are reached directly; a worker is alive when its heartbeat
(``workers.heartbeat_ages``) is younger than WORKER_HEARTBEAT_MAX_AGE. The apps add their
own checks (gallery: the backlog of images waiting for an embedding) through
``observability.registry``. The causes go to the log; the answer, which anyone may read,
names only what is down.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from . import registry, workers
from .registry import Check, ReadinessCheck

logger = logging.getLogger(__name__)

UNKNOWN = "unknown: the %s is unreachable"


def database_check() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        # One line, no traceback: a probe asks every few seconds all through an outage.
        logger.warning("Readiness: the database is unreachable: %s", error)
        # A connection broken by a restart is not reused by the next check.
        connection.close()
        return {"ok": False, "error": "unreachable"}
    return {"ok": True}


def broker_check() -> Check:
    try:
        workers.redis_client().ping()
    except (redis.RedisError, OSError) as error:
        logger.warning("Readiness: the broker is unreachable: %s", error)
        return {"ok": False, "error": "unreachable"}
    return {"ok": True}


def worker_check() -> Check:
    max_age = settings.WORKER_HEARTBEAT_MAX_AGE
    try:
        ages = workers.heartbeat_ages()
    except (redis.RedisError, OSError) as error:
        logger.warning("Readiness: the worker heartbeats cannot be read: %s", error)
        return {"ok": False, "error": "the heartbeats cannot be read", "max_age_seconds": max_age}
    alive = sorted(worker for worker, age in ages.items() if age <= max_age)
    youngest = min(ages.values(), default=None)
    check = {"ok": bool(alive), "workers": len(alive), "max_age_seconds": max_age}
    if youngest is not None:
        check["youngest_heartbeat_seconds"] = round(youngest, 1)
    if not alive:
        check["error"] = f"no worker heartbeat in the last {max_age:g} seconds"
    return check


# The servers every site needs, checked first; then the apps' own checks, in the order they
# registered (``registry.readiness_check_register``).
CHECKS: dict[str, ReadinessCheck] = {
    "database": ReadinessCheck(check=database_check, reads_through=None),
    "broker": ReadinessCheck(check=broker_check, reads_through=None),
    "worker": ReadinessCheck(check=worker_check, reads_through="broker"),
}


def readiness() -> tuple[bool, dict]:
    """(ready, body) where body names every check and, under "down", those that failed."""
    checks = {**CHECKS, **registry.readiness_checks()}
    results: dict[str, Check] = {}

    def result(name: str) -> Check:
        if name not in results:
            entry = checks[name]
            # When the server a check reads through is down, it is not tried: a second wait
            # for the same unreachable server would only slow the answer.
            if entry.reads_through and not result(entry.reads_through)["ok"]:
                results[name] = {"ok": False, "error": UNKNOWN % entry.reads_through}
            else:
                results[name] = entry.check()
        return results[name]

    body_checks = {name: result(name) for name in checks}
    down = [name for name, outcome in body_checks.items() if not outcome["ok"]]
    body = {"status": "unavailable" if down else "ok", "down": down, "checks": body_checks}
    return not down, body
