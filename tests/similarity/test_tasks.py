"""The embedding task owns the retry policy: a lost connection is tried again, a bug is not.

(Its time limit is checked by what it does, in ``test_faults``: a batch over the soft limit
ends failed with the reason, and the worker goes on.)
"""

import pytest
from django.db import OperationalError

from similarity import tasks

pytestmark = pytest.mark.django_db


def failing_with(error, calls: list):
    def images_embed(**kwargs):
        calls.append(kwargs["image_ids"])
        raise error

    return images_embed


def test_a_lost_database_connection_is_retried_up_to_the_limit_then_reported(monkeypatch, image_factory):
    image = image_factory(1)
    calls = []
    monkeypatch.setattr(tasks.embedding, "images_embed", failing_with(OperationalError("connection lost"), calls))

    # Run as the worker would, retries included (eager: without the backoff's waits).
    outcome = tasks.images_embed.apply(args=[[image.pk]])

    assert len(calls) == 1 + tasks.RETRY_POLICY["max_retries"]
    assert isinstance(outcome.result, OperationalError)
    assert image.embedding_status == "pending"  # never the image's fault


def test_a_bug_is_not_retried(monkeypatch, image_factory):
    image = image_factory(1)
    calls = []
    monkeypatch.setattr(tasks.embedding, "images_embed", failing_with(ValueError("a bug"), calls))

    outcome = tasks.images_embed.apply(args=[[image.pk]])

    assert calls == [[image.pk]]
    assert isinstance(outcome.result, ValueError)

