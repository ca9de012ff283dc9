"""Loaded into test workers only: `celery worker --include=tests.worker_records`.

Each pool process appends what it claimed, passed through the network and stored (the
embedding service's ``embedding_progress`` signal), with the wall-clock time and the
worker's name, as JSON lines to the file named by TEST_WORKER_RECORDS. Workers in other
network namespaces share this host's clock and disk, so one file orders them all.
"""

from __future__ import annotations

import json
import os
import time

from celery import signals

RECORDS = os.environ.get("TEST_WORKER_RECORDS", "")
WORKER = os.environ.get("TEST_WORKER_NAME", "")


def _record(entry: dict) -> None:
    with open(RECORDS, "a") as handle:  # one short write per line: lines never interleave
        handle.write(json.dumps(entry) + "\n")


def _progress(sender=None, stage="", image_ids=(), **kwargs) -> None:
    _record({"worker": WORKER, "pid": os.getpid(), "stage": stage, "ids": list(image_ids), "at": time.time()})


def _process_ready(**kwargs) -> None:
    # Django is set up in the pool process by now, so the service module can be imported.
    from similarity.embedding import embedding_progress

    embedding_progress.connect(_progress, weak=False)
    _record({"worker": WORKER, "pid": os.getpid(), "stage": "ready", "ids": [], "at": time.time()})


if RECORDS:
    signals.worker_process_init.connect(_process_ready, weak=False)
