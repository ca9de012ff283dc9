"""Embedding workers on other hosts: each in a network namespace of its own, reaching
PostgreSQL and Redis over TCP only, never embedding an image another is still working on.

The test starts its own PostgreSQL and Redis, listening on this host's end of each
namespace's veth pair, and its own media folder, which the namespaces share through the
disk as workers on real hosts would share object storage. 1,000 photos are imported here
(as the web host does) and thumbnailed by this host's worker; then one worker embeds alone,
a second joins, and the first is SIGKILLed in the middle of a claim. The sweeper runs every second and takes back images
"processing" for over two seconds, so it keeps trying to hand live workers' images to the
other worker: the claims' locks must refuse it.

Every worker process records what it claimed, passed through the network and stored
(``tests/worker_records.py``); the records give the counter of forward passes per image and
the throughput with one worker and with two.

Needs root for ``ip netns``; skipped, with the reason, where namespaces cannot be made, and
failed instead under CI=true.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings

from devtools import services
from devtools.workers import (
    PROJECT_DIR,
    NetworkNamespace,
    WorkerProcess,
    free_subnet_prefixes,
    wait_for,
)
from imaging import synthetic_photo

pytestmark = [pytest.mark.end_to_end]

IMAGES = 1000
SIZE = (160, 120)
# Sends the lost work again every second; "processing" for two seconds counts as lost.
EAGER_SWEEPER = {
    "EMBEDDING_SWEEP_INTERVAL": "1",
    "EMBEDDING_SWEEP_PENDING_AFTER": "2",
    "EMBEDDING_SWEEP_PROCESSING_AFTER": "2",
}


@pytest.fixture
def namespaces():
    made: list[NetworkNamespace] = []
    try:
        for index, prefix in enumerate(free_subnet_prefixes(2)):
            made.append(NetworkNamespace(f"ir{os.getpid()}-{index}", prefix).create())
    except (subprocess.CalledProcessError, OSError, RuntimeError) as error:
        for namespace in made:
            namespace.remove()
        detail = getattr(error, "stderr", "") or str(error)
        reason = f"network namespaces cannot be made here (ip netns, as root): {detail.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield made
    finally:
        for namespace in made:
            namespace.remove()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


@pytest.fixture
def servers(namespaces):
    """PostgreSQL and Redis on this host, reachable from the namespaces over TCP only."""
    # In the session's folder (removed at its end), which PostgreSQL's own account can reach.
    data_dir = Path(settings.TEST_SESSION_DIR) / "other-hosts"
    pg_port, redis_port = free_port(), free_port()
    listen = tuple(namespace.host_address for namespace in namespaces)
    try:
        services.postgres_start(
            data_dir, port=pg_port, listen=listen, clients=tuple(f"{n.prefix}.0/24" for n in namespaces)
        )
        redis_socket = services.redis_start(data_dir, port=redis_port, listen=listen)
        yield {
            "pg_port": pg_port,
            "redis_port": redis_port,
            # This host (the web host) reaches the database at its own end of a pair, Redis
            # over its Unix socket.
            "DATABASE_URL": services.postgres_tcp_url(pg_port, host=listen[0]),
            "CELERY_BROKER_URL": services.redis_url(redis_socket),
        }
    finally:
        services.redis_stop(data_dir)
        services.postgres_stop(data_dir)


def environment(**values) -> dict:
    base = {key: value for key, value in os.environ.items() if key not in ("CACHE_URL", "CELERY_RESULT_BACKEND")}
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
        # The session's media folder: every host reads and writes the same files.
        "IMAGEREC_TEST_SESSION": settings.TEST_SESSION,
        **EAGER_SWEEPER,
        **values,
    }


def manage(env: dict, *arguments: str) -> None:
    done = subprocess.run([sys.executable, "manage.py", *arguments], cwd=PROJECT_DIR, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    assert done.returncode == 0, f"manage.py {' '.join(arguments)} failed:\n{done.stderr[-3000:]}"


def read_records(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def stored_by(records, worker=None) -> list[dict]:
    return [r for r in records if r["stage"] == "stored" and (worker is None or r["worker"] == worker)]


def count_ids(records) -> int:
    return sum(len(record["ids"]) for record in records)


def test_workers_in_other_network_namespaces_embed_each_image_once_and_survive_a_kill(
    namespaces, servers, tmp_path
):
    host_env = environment(DATABASE_URL=servers["DATABASE_URL"], CELERY_BROKER_URL=servers["CELERY_BROKER_URL"])
    manage(host_env, "migrate", "-v0")
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(IMAGES):
        synthetic_photo(10_000 + seed, SIZE).save(photos / f"photo-{seed:04d}.jpg", quality=90)
    manage(host_env, "import_images", str(photos))

    records = tmp_path / "records.jsonl"
    queues = {name: route["queue"] for name, route in settings.CELERY_TASK_ROUTES.items()}
    # This host's worker: thumbnails and the sweeper (Celery beat).
    started = [
        WorkerProcess(
            host_env, beat=True, queues=f"{queues['gallery.renditions_create']},{settings.CELERY_TASK_DEFAULT_QUEUE}"
        ).start(tmp_path / "workers", wait=False)
    ]

    def embedding_worker(index: int) -> WorkerProcess:
        namespace = namespaces[index]
        env = environment(
            DATABASE_URL=services.postgres_tcp_url(servers["pg_port"], host=namespace.host_address),
            CELERY_BROKER_URL=services.redis_tcp_url(servers["redis_port"], host=namespace.host_address),
            TEST_WORKER_RECORDS=str(records),
            TEST_WORKER_NAME=f"host{index + 1}",
        )
        worker = WorkerProcess(
            env,
            queues=queues["similarity.images_embed"],
            command_prefix=namespace.command_prefix,
            arguments=("--include=tests.worker_records",),
        ).start(tmp_path / "workers", wait=False)
        started.append(worker)
        return worker

    def thumbnailed() -> int:
        with psycopg2.connect(servers["DATABASE_URL"]) as database, database.cursor() as cursor:
            cursor.execute("SELECT count(DISTINCT image_id) FROM gallery_rendition")
            return cursor.fetchone()[0]

    try:
        # Thumbnails first, so they do not share the CPUs with the throughput measured below.
        wait_for(lambda: thumbnailed() == IMAGES, timeout=300, interval=0.5, message="every image's renditions")
        first = embedding_worker(0)
        wait_for(lambda: count_ids(stored_by(read_records(records))) >= 300, timeout=300, interval=0.5,
                 message="the first worker to embed 300 images alone")
        embedding_worker(1)
        wait_for(lambda: stored_by(read_records(records), "host2"), timeout=120, interval=0.2,
                 message="the second worker's first stored batch")
        two_from = stored_by(read_records(records), "host2")[0]["at"]
        wait_for(lambda: count_ids(stored_by(read_records(records))) >= 750, timeout=300, interval=0.5,
                 message="both workers to reach 750 images")

        def first_is_mid_claim() -> bool:
            entries = [r for r in read_records(records) if r["worker"] == "host1"]
            claimed = {i for r in entries if r["stage"] == "claimed" for i in r["ids"]}
            return bool(claimed - {i for r in stored_by(entries) for i in r["ids"]})

        wait_for(first_is_mid_claim, timeout=60, interval=0.02, message="the first worker to hold a claim")
        killed_at = time.time()
        first.kill()

        with psycopg2.connect(servers["DATABASE_URL"]) as database:
            database.autocommit = True

            def statuses() -> dict[str, int]:
                with database.cursor() as cursor:
                    cursor.execute("SELECT status, count(*) FROM similarity_embeddingjob GROUP BY 1")
                    return dict(cursor.fetchall())

            wait_for(lambda: statuses().get("ready") == IMAGES, timeout=300, interval=0.5,
                     message=f"all {IMAGES} images to be ready after the kill")
            with database.cursor() as cursor:
                cursor.execute("SELECT count(*), count(DISTINCT image_id) FROM similarity_embedding")
                embeddings, embedded_images = cursor.fetchone()
            final = statuses()
    finally:
        for worker in started:
            worker.stop()

    assert final == {"ready": IMAGES}
    assert (embeddings, embedded_images) == (IMAGES, IMAGES)

    entries = read_records(records)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for entry in entries:
        for image_id in entry["ids"]:
            by_image[image_id].append(entry)
    # Killed between its commit and its record, a worker leaves one batch stored but unrecorded.
    assert len({i for r in stored_by(entries) for i in r["ids"]}) >= IMAGES - settings.EMBEDDING_BATCH_SIZE

    # Forward passes per image: one, or two where the killed worker's pass never reached the
    # database (the claim it was working on when it died).
    passes = {image_id: [e for e in found if e["stage"] == "forwarded"] for image_id, found in by_image.items()}
    assert sum(1 for found in passes.values() if found) == IMAGES
    repeated = {image_id: found for image_id, found in passes.items() if len(found) > 1}
    for image_id, found in repeated.items():
        assert len(found) == 2 and found[0]["worker"] == "host1" and found[1]["worker"] == "host2", (image_id, found)
        assert not any(e["worker"] == "host1" for e in stored_by(by_image[image_id])), image_id
    assert len(repeated) <= settings.EMBEDDING_BATCH_SIZE * settings.EMBEDDING_CLAIM_BATCHES  # one claim

    # No image in the hands of two workers at overlapping times: each holding runs from its
    # claim to its store (or to the kill), and the next one starts after it ends.
    for image_id, found in by_image.items():
        spans = []
        for worker in {e["worker"] for e in found}:
            mine = [e for e in found if e["worker"] == worker]
            for claim in (e for e in mine if e["stage"] == "claimed"):
                ends = [e["at"] for e in mine if e["stage"] == "stored" and e["at"] >= claim["at"]]
                end = min(ends) if ends else (killed_at if worker == "host1" else float("inf"))
                spans.append((claim["at"], end, worker))
        spans.sort()
        for (_, end, worker), (start, _, other) in pairwise(spans):
            assert start >= end, f"image {image_id}: {other} claimed it while {worker} held it"

    one_worker = [r for r in stored_by(entries, "host1") if r["at"] < two_from]
    one_rate = (count_ids(one_worker) - len(one_worker[0]["ids"])) / (one_worker[-1]["at"] - one_worker[0]["at"])
    two_workers = [r for r in stored_by(entries) if two_from < r["at"] <= killed_at]
    two_rate = count_ids(two_workers) / (killed_at - two_from)
    print(
        f"\nThroughput over TCP from network namespaces ({os.cpu_count()} CPUs): "
        f"one worker {one_rate:.1f} images/s, two workers {two_rate:.1f} images/s "
        f"({two_rate / one_rate:.2f}x); {len(repeated)} image(s) passed through the network again after the kill"
    )
