"""Celery tasks: interfaces that call one service and own the time limits.

Beat sends ``clicks.events_flush`` every CLICKS_FLUSH_SECONDS (settings' CELERY_BEAT_SCHEDULE).
"""

from dataclasses import asdict

from celery import shared_task

from . import evidence, services


# No retries: the next beat does the same work a few seconds later.
@shared_task(
    name="clicks.events_flush",
    soft_time_limit=services.FLUSH_TIME_BUDGET_SECONDS + 60,
    time_limit=services.FLUSH_TIME_BUDGET_SECONDS + 90,
)
def events_flush() -> dict:
    """Write the buffered impressions and choices to PostgreSQL, at least once each: a worker
    killed between a batch's commit and its removal from the buffer has it counted twice."""
    return asdict(services.events_flush())


# No retries: each run rebuilds the evidence from every retained day, so the next beat repairs
# a failed one.
@shared_task(name="clicks.evidence_refresh", soft_time_limit=240, time_limit=270)
def evidence_refresh() -> int:
    """Rebuild the evidence the hybrid lists rank by; how many sources' lists it changed."""
    return len(evidence.evidence_refresh())
