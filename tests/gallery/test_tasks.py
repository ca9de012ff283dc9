"""The tasks own the retry and time-limit policy: each kind of work has limits of its own."""

from django.db import OperationalError

from gallery import pipeline, tasks
from imagerec.celery import app


def test_each_task_has_its_own_time_limits(settings):
    embed = app.tasks[pipeline.EMBED_TASK]
    renditions = app.tasks[pipeline.RENDITIONS_TASK]
    sweep = app.tasks[pipeline.SWEEP_TASK]

    assert (embed.soft_time_limit, embed.time_limit) == (
        settings.EMBEDDING_SOFT_TIME_LIMIT,
        settings.EMBEDDING_TIME_LIMIT,
    )
    # A batch of embeddings may take minutes; thumbnails and the sweeper must not be given as long.
    assert renditions.time_limit < embed.soft_time_limit
    assert sweep.time_limit < embed.soft_time_limit
    for task in (embed, renditions, sweep):
        assert task.soft_time_limit < task.time_limit


def test_lost_connections_are_retried_and_nothing_else_is():
    embed = app.tasks[pipeline.EMBED_TASK]
    assert OperationalError in embed.autoretry_for
    assert ValueError not in embed.autoretry_for
    assert embed.max_retries == tasks.RETRY_POLICY["max_retries"]
