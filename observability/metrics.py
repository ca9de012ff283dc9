"""The pipeline's metrics: counted in worker processes, exported by the web's ``/metrics``.

Each worker pool process counts in its own prometheus-client registry and, after every
task, stores a snapshot of it in Redis (``workers.metrics_snapshot_store``). The web sums a
worker's snapshots and adds a ``worker`` label (``worker_families``). So one scrape of the
site shows every worker, wherever it runs, and a counter never goes back while a worker
lives: a pool process that was replaced leaves its last snapshot behind, as
prometheus-client's multiprocess mode keeps a dead process's file.

The metric objects are made on first use, in the process that counts: importing this
module creates nothing (in a gunicorn process they would otherwise write multiprocess files).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric

# Batches take from a few milliseconds (renditions of one image) to minutes (a full claim of
# large photos on a busy CPU).
TASK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


# The families below, by name: the web exports them from the workers' snapshots only.
WORKER_FAMILIES = frozenset(
    {
        "imagerec_task_duration_seconds",
        "imagerec_images_embedded",
        "imagerec_images_embedding_failed",
        "imagerec_embedding_step_seconds",
    }
)


@dataclass(frozen=True)
class PipelineMetrics:
    registry: CollectorRegistry
    task_seconds: Histogram
    images_embedded: Counter
    images_failed: Counter
    embedding_step_seconds: Histogram


@functools.cache
def pipeline_metrics() -> PipelineMetrics:
    registry = CollectorRegistry()
    return PipelineMetrics(
        registry=registry,
        task_seconds=Histogram(
            "imagerec_task_duration_seconds",
            "Celery task run time by task and outcome (success, failure, retry).",
            ["task", "outcome"],
            buckets=TASK_BUCKETS,
            registry=registry,
        ),
        images_embedded=Counter(
            "imagerec_images_embedded",
            "Images whose embedding was stored (rate() gives images per second).",
            registry=registry,
        ),
        images_failed=Counter(
            "imagerec_images_embedding_failed",
            "Images given up on (undecodable, over the attempt or time limit).",
            registry=registry,
        ),
        embedding_step_seconds=Histogram(
            "imagerec_embedding_step_seconds",
            "Seconds one embedding call spent on each step (claim, decode, forward, store, ...).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=registry,
        ),
    )


def embedding_recorded(*, ready: int, failed: int, timings: dict[str, float]) -> None:
    """Count one call of the embedding service (a batch of images embedded)."""
    metrics = pipeline_metrics()
    metrics.images_embedded.inc(ready)
    metrics.images_failed.inc(failed)
    for step, seconds in timings.items():
        metrics.embedding_step_seconds.labels(step=step).observe(seconds)


def task_recorded(*, task: str, outcome: str, seconds: float) -> None:
    pipeline_metrics().task_seconds.labels(task=task, outcome=outcome).observe(seconds)


# --- Snapshots: from a worker's registry to the web's scrape ------------------------------


def snapshot() -> list[dict]:
    """This process's pipeline metrics as JSON-ready data.

    ``_created`` samples are left out: creation times cannot be added up across processes.
    """
    families = []
    for family in pipeline_metrics().registry.collect():
        samples = [
            [sample.name, sample.labels, sample.value]
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]
        families.append(
            {"name": family.name, "documentation": family.documentation, "type": family.type, "samples": samples}
        )
    return families


def worker_families(snapshots_by_worker: dict[str, Iterable[list[dict]]]) -> list[Metric]:
    """Metric families for the scrape: each worker's processes summed, labelled ``worker``.

    Built as prometheus-client's own multiprocess collector builds its merged families.
    """
    descriptions: dict[str, tuple[str, str]] = {}
    totals: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
    for worker, snapshots in sorted(snapshots_by_worker.items()):
        for process_snapshot in snapshots:
            for family in process_snapshot:
                descriptions.setdefault(family["name"], (family["documentation"], family["type"]))
                for name, labels, value in family["samples"]:
                    key = (name, tuple(sorted({**labels, "worker": worker}.items())))
                    totals[family["name"]][key] += value
    families = []
    for family_name, samples in sorted(totals.items()):
        documentation, kind = descriptions[family_name]
        family = Metric(family_name, documentation, kind)
        for (name, labels), value in sorted(samples.items(), key=_sample_order):
            family.add_sample(name, dict(labels), value)
        families.append(family)
    return families


def _sample_order(item) -> tuple:
    (name, labels), _ = item
    # Buckets in ascending order of their bound, as the exposition format expects.
    bound = dict(labels).get("le")
    return (tuple((key, value) for key, value in labels if key != "le"), name, float(bound) if bound else 0.0)
