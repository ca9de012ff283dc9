"""The embedding worker's own per-image database work, decode and forward pass excluded.

What ``similarity.embedding.images_embed`` does around the network for each batch, through
the same services: claim the rows, store the vectors and mark them ready, end the claims,
then tell ``images_embedded``'s listeners (the gallery's near-duplicate check). Run against
the bench's own PostgreSQL with BACKGROUND images already embedded (the HNSW index the
check walks), for batches of 64 (the CPU worker's) and 1,024 (a GPU worker's), and printed
as microseconds per image per step and the rate those steps alone would allow.

    .venv/bin/python bench/worker_overhead.py [--background 20000] [--images 4096]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np

import common

DATA_DIR = common.ROOT / ".devdata" / "bench-worker-overhead"
STEPS = ("claim", "format", "store", "claims_end", "duplicates")


def images_add(count: int, start: int) -> list[int]:
    """Image rows without files (the steps measured here never open one), in one INSERT."""
    from gallery.models import Image

    rows = [
        Image(file=f"bench/{number}.jpg", original_name=f"{number}.jpg", format="JPEG", width=640, height=480,
              file_size=1, sha256=hashlib.sha256(str(number).encode()).hexdigest())
        for number in range(start, start + count)
    ]
    return [image.pk for image in Image.objects.bulk_create(rows, batch_size=5000)]


def measure(*, batch_size: int, image_ids: list[int], vectors: np.ndarray, identity: str) -> tuple[dict, dict]:
    """Seconds per step (wall clock, and this process's CPU) over ``image_ids``, a batch at a time."""
    from django.db import transaction

    from similarity import lifecycle
    from similarity.embedding import images_embed
    from similarity.services import _halfvec_literals, embeddings_store
    from similarity.signals import images_embedded

    seconds = dict.fromkeys(STEPS, 0.0)
    cpu = dict.fromkeys(STEPS, 0.0)  # this process's CPU: the worker's own cost, the server's excluded
    for start in range(0, len(image_ids), batch_size):
        batch = image_ids[start : start + batch_size]
        by_image = dict(zip(batch, vectors[start : start + batch_size]))
        marks = [(time.perf_counter(), time.process_time())]
        claim = lifecycle.images_claim(image_ids=batch, identity=identity)
        marks.append((time.perf_counter(), time.process_time()))
        _halfvec_literals(by_image.values())  # the text form alone: part of the store below
        marks.append((time.perf_counter(), time.process_time()))
        with transaction.atomic():
            embeddings_store(vectors_by_image=by_image, identity=identity)
            lifecycle.images_mark_ready(image_ids=batch, identity=identity)
        marks.append((time.perf_counter(), time.process_time()))
        lifecycle.claims_end(job_ids=list(claim.job_ids.values()))
        marks.append((time.perf_counter(), time.process_time()))
        images_embedded.send(sender=images_embed, image_ids=batch, identity=identity)
        marks.append((time.perf_counter(), time.process_time()))
        assert len(claim.jobs) == len(batch)
        for step, before, after in zip(STEPS, marks, marks[1:]):
            seconds[step] += after[0] - before[0]
            cpu[step] += after[1] - before[1]
    return seconds, cpu


def nearest_query_plan(image_ids: list[int], identity: str) -> str:
    """EXPLAIN of the near-duplicate check's query, as the worker sends it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from similarity.selectors import nearest_neighbours_of

    with CaptureQueriesContext(connection) as queries:
        nearest_neighbours_of(image_ids=image_ids, identity=identity)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + queries[0]["sql"])
        return "\n".join(row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--background", type=int, default=20_000, help="images embedded beforehand")
    parser.add_argument("--images", type=int, default=4096, help="images measured per batch size")
    args = parser.parse_args()

    common.django_setup(DATA_DIR)
    try:
        from django.db import connection

        from similarity import lifecycle
        from similarity.services import embeddings_store
        from similarity.weights import model_identity

        identity = model_identity()
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE gallery_image CASCADE")
        distribution = common.EmbeddingDistribution()
        background = images_add(args.background, 0)
        vectors = distribution.sample(args.background + 2 * args.images)
        for start in range(0, len(background), 5000):
            chunk = background[start : start + 5000]
            embeddings_store(vectors_by_image=dict(zip(chunk, vectors[start : start + 5000])), identity=identity)
        common.log(f"{len(background)} background images embedded")

        results = {}
        for round_, batch_size in enumerate((64, 1024)):
            image_ids = images_add(args.images, args.background + round_ * args.images)
            lifecycle.images_mark_pending(image_ids=image_ids, identity=identity)
            batch_vectors = vectors[args.background + round_ * args.images :][: args.images].copy()
            # One in twenty is a near copy of a background image, so the check has flags to set.
            batch_vectors[::20] = vectors[: len(batch_vectors[::20])] * 0.999 + 0.001 * batch_vectors[::20]
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE similarity_embedding")
            seconds, cpu = measure(batch_size=batch_size, image_ids=image_ids, vectors=batch_vectors, identity=identity)
            results[batch_size] = {step: (seconds[step] / args.images * 1e6, cpu[step] / args.images * 1e6) for step in STEPS}
            if round_ == 0:
                plan = nearest_query_plan(image_ids[:64], identity)
                common.log("near-duplicate query plan:\n" + plan)

        print(f"\n{args.images} images per batch size, {args.background} embedded beforehand; us/image, wall / worker CPU")
        print(f"{'step':<12}" + "".join(f"{f'batch {size}':>22}" for size in results))
        for step in STEPS:
            print(f"{step:<12}" + "".join(f"{figures[step][0]:>12.1f} /{figures[step][1]:>8.1f}" for figures in results.values()))
        for size, figures in results.items():
            # "format" is timed alone and again inside "store": counted once.
            wall, cpu = (sum(figures[step][which] for step in STEPS if step != "format") for which in (0, 1))
            print(f"batch {size}: {wall:.0f} us/image wall ({1e6 / wall:,.0f} images/s), "
                  f"{cpu:.0f} us/image worker CPU ({1e6 / cpu:,.0f} images/s)")
    finally:
        common.servers_stop(DATA_DIR)


if __name__ == "__main__":
    main()
