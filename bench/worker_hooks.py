"""Loaded into the ingestion benchmark's worker only: `celery worker --include=bench.worker_hooks`.

Every finished task's return value is appended, with wall-clock stamps, as one JSON line to
the file named by BENCH_TASK_RECORDS. The embedding task returns its own timings
(``EmbedResult.as_dict()``), so the benchmark reads them there, never from the worker's log.
Each pool process also records when its network is loaded and how many torch threads it has.
"""

from __future__ import annotations

import json
import os
import time

from celery import signals

RECORDS = os.environ.get("BENCH_TASK_RECORDS", "")
_started: dict[str, float] = {}


def _record(entry: dict) -> None:
    with open(RECORDS, "a") as handle:  # one short write per line: lines never interleave
        handle.write(json.dumps(entry) + "\n")


def _task_started(task_id=None, **kwargs) -> None:
    _started[task_id] = time.time()


def _task_finished(task_id=None, task=None, retval=None, state=None, **kwargs) -> None:
    _record({"task": task.name, "state": state, "started": _started.pop(task_id, None), "ended": time.time(),
             "result": retval if isinstance(retval, dict) else None})


def _process_ready(**kwargs) -> None:
    from similarity.encoders.registry import get_encoder  # loaded once per process; cached afterwards

    encoder = get_encoder()
    _record({"event": "process_ready", "pid": os.getpid(), "at": time.time(), "threads": encoder.threads})


if RECORDS:
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_finished, weak=False)
    signals.worker_process_init.connect(_process_ready, weak=False)
