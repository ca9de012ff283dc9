"""Readiness: can this site do its work now? Each check says yes, or what is wrong.

The database and the broker are reached directly; a worker is alive when its heartbeat
(``workers.heartbeat_ages``) is younger than WORKER_HEARTBEAT_MAX_AGE; the backlog is the
images waiting for an embedding (pending or processing), at most READYZ_BACKLOG_MAX. The
causes go to the log; the answer, which anyone may read, names only what is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from gallery.models import Image
from gallery.selectors import images_count_by_status

from . import workers

logger = logging.getLogger(__name__)

Check = dict  # {"ok": bool, ...details}
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


def backlog_check() -> Check:
    limit = settings.READYZ_BACKLOG_MAX
    try:
        counts = images_count_by_status()
    except DatabaseError as error:
        # The database answers (its own check passed) but the images cannot be counted:
        # migrations not applied, permissions.
        logger.warning("Readiness: the images cannot be counted: %s", error)
        connection.close()
        return {"ok": False, "error": "the images cannot be counted", "max": limit}
    waiting = counts[Image.Status.PENDING] + counts[Image.Status.PROCESSING]
    check = {"ok": waiting <= limit, "waiting": waiting, "max": limit}
    if waiting > limit:
        check["error"] = f"{waiting} images wait for an embedding (more than {limit})"
    return check


# Each check, and the one it reads through: when that one is down, this one is not tried
# (a second wait for the same unreachable server would only slow the answer).
CHECKS: dict[str, tuple[Callable[[], Check], str | None]] = {
    "database": (database_check, None),
    "broker": (broker_check, None),
    "worker": (worker_check, "broker"),
    "backlog": (backlog_check, "database"),
}


def readiness() -> tuple[bool, dict]:
    """(ready, body) where body names every check and, under "down", those that failed."""
    results: dict[str, Check] = {}
    for name, (check, reads_through) in CHECKS.items():
        if reads_through and not results[reads_through]["ok"]:
            results[name] = {"ok": False, "error": UNKNOWN % reads_through}
        else:
            results[name] = check()
    down = [name for name, result in results.items() if not result["ok"]]
    body = {"status": "unavailable" if down else "ok", "down": down, "checks": results}
    return not down, body
