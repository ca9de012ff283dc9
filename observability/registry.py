"""What the apps tell observability: their readiness checks, their gauges, their image tasks.

The one module of observability that apps import (``.importlinter`` holds them to it), so
observability itself imports no app: each app registers what it knows in its
``AppConfig.ready()``, and ``/readyz``, ``/metrics`` and the log lines read it from here.
Registering a name again replaces it, so a second ``ready()`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .metrics import embedding_recorded

__all__ = [
    "Check",
    "embedding_recorded",
    "gauge_register",
    "image_task_register",
    "readiness_check_register",
]

Check = dict  # {"ok": bool, ...details}; when not ok, "error" says what is wrong


@dataclass(frozen=True)
class ReadinessCheck:
    check: Callable[[], Check]
    # The check it reads through: when that one is down, this one is not tried.
    reads_through: str | None


@dataclass(frozen=True)
class Gauge:
    documentation: str
    label: str
    collect: Callable[[], Mapping[str, float]]


_readiness_checks: dict[str, ReadinessCheck] = {}
_gauges: dict[str, Gauge] = {}
_image_tasks: set[str] = set()


def readiness_check_register(name: str, check: Callable[[], Check], *, reads_through: str | None = None) -> None:
    """``check()`` answers ``{"ok": True, ...}`` or ``{"ok": False, "error": ..., ...}`` for /readyz.

    Its answer is shown only to the bearer of METRICS_TOKEN; its causes belong in the log.
    ``reads_through`` names the check of the server it reaches (a second wait for the same
    unreachable server would only slow the answer).
    """
    _readiness_checks[name] = ReadinessCheck(check=check, reads_through=reads_through)


def gauge_register(name: str, *, documentation: str, label: str, collect: Callable[[], Mapping[str, float]]) -> None:
    """A gauge read at each scrape of /metrics: ``collect()`` maps each value of ``label`` to a number.

    A ``collect`` that raises DatabaseError leaves the gauge out of that scrape (and says so in
    the log), so the rest of the scrape still answers during a database outage.
    """
    _gauges[name] = Gauge(documentation=documentation, label=label, collect=collect)


def image_task_register(name: str) -> None:
    """A Celery task whose first argument is the list of images it works on: its log lines name them."""
    _image_tasks.add(name)


def readiness_checks() -> dict[str, ReadinessCheck]:
    return dict(_readiness_checks)


def gauges() -> dict[str, Gauge]:
    return dict(_gauges)


def image_tasks() -> frozenset[str]:
    return frozenset(_image_tasks)
