"""Ingestion benchmark: photo-sized JPEGs through image_create, a real Celery worker and PostgreSQL.

    .venv/bin/python bench/ingest.py [--images 500] [--batch-size 16] [--concurrency 1]
    .venv/bin/python bench/ingest.py --report-only

Its own embedded PostgreSQL and Redis under ``.devdata/bench-ingest`` (stopped at the end
unless ``--keep-services``), random ResNet18 weights (no download: the forward pass costs the
same as with the ImageNet weights), photos of 3000x2000 (JPEG q90) generated once and kept
there. One worker, started as the tests start theirs (``devtools.workers.WorkerProcess``), with
``bench/worker_hooks.py`` loaded: each task's return value (the embedding task's own
timings) reaches this script as a JSON line. Phases, after one warm-up upload:

1. latency: single uploads to the idle worker, commit -> embedding stored;
2. drain: N uploads queued while the worker's consumer is cancelled, then released: the
   worker's own rate on a deep queue (first claim to last embedding stored);
3. live: N uploads while the worker consumes (one ``image_create`` after another);
4. live with thumbnails: the same with the rendition tasks the uploads also send, on the same
   queue (the other phases route them to a queue no worker reads: settings, not patches);
5. forward: the bare network at the worker's batch size and threads, in this process, right
   before and after the drain; and decode plus forward three ways of sharing the cores.

Runs accumulate in ``bench/out/ingest-runs.json``; the best one fills in docs/ingestion.md
(and the Ingestion section of docs/benchmarks.md) and draws docs/img/ingestion.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import common
from common import ROOT, log, percentile

from devtools.workers import WorkerProcess, purge_queues, wait_for

DATA_DIR = ROOT / ".devdata" / "bench-ingest"
PHOTOS_DIR, MEDIA_DIR, RECORDS = DATA_DIR / "photos", DATA_DIR / "media", DATA_DIR / "task-records.jsonl"
DOCS_FILE, PLOT_FILE = common.DOCS_DIR / "ingestion.md", common.DOCS_DIR / "img" / "ingestion.png"
PHOTO_SIZE, JPEG_QUALITY = (3000, 2000), 90
HELD_QUEUE = "bench-renditions-held"
GOAL_RATIO, GOAL_LATENCY = 0.85, 1.0
STEPS = {"claim": "claim (database)", "decode": "waiting for decode + resize", "forward": "forward pass",
         "store": "store (database)", "duplicates": "near-duplicate check", "other": "Celery, tasks with nothing left"}


# --- Photos ---------------------------------------------------------------------------


def photo_path(index: int) -> Path:
    return PHOTOS_DIR / f"photo-{index:04d}.jpg"


def photo_make(index: int) -> None:
    """synthetic_photo drawn at a quarter size, enlarged, then given sensor-like grain (which is
    what makes a real photo's JPEG big)."""
    import numpy as np
    from PIL import Image

    from imaging import synthetic_photo

    base = synthetic_photo(1_000_003 + index, (PHOTO_SIZE[0] // 4, PHOTO_SIZE[1] // 4))
    pixels = np.asarray(base.resize(PHOTO_SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
    pixels += np.random.default_rng(index).integers(-10, 11, size=pixels.shape, dtype=np.int16)
    temporary = photo_path(index).with_suffix(".tmp")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(temporary, "JPEG", quality=JPEG_QUALITY)
    temporary.rename(photo_path(index))


def photos_ensure(count: int) -> list[Path]:
    PHOTOS_DIR.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(count) if not photo_path(index).exists()]
    if missing:
        log(f"Generating {len(missing)} photo(s) (kept for later runs) ...")
        with Pool(os.cpu_count()) as pool:
            pool.map(photo_make, missing, chunksize=4)
    return [photo_path(index) for index in range(count)]


# --- The worker, the queue and the database -----------------------------------------------


def tree(pid: int) -> list:
    import psutil

    try:
        main = psutil.Process(pid)
        return [main, *main.children(recursive=True)]
    except psutil.Error:
        return []


def summed(pid: int, read) -> float:
    """``read(process)`` summed over a process and its descendants (one that vanished counts 0)."""
    import psutil

    total = 0
    for process in tree(pid):
        try:
            total += read(process)
        except psutil.Error:
            pass
    return total


def cpu_seconds(process) -> float:
    return sum(process.cpu_times()[:2])  # user + system


class Memory:
    """The worker tree's resident memory, sampled every 50 ms: peaks overall, by phase, and since
    the network was loaded."""

    def __init__(self, pid: int):
        self.pid, self.phase, self.loaded = pid, "start", False
        self.peak, self.working, self.by_phase = 0, 0, {}
        threading.Thread(target=self.sample, daemon=True).start()

    def sample(self) -> None:
        while total := summed(self.pid, lambda process: process.memory_info().rss):
            self.peak = max(self.peak, total)
            self.by_phase[self.phase] = max(self.by_phase.get(self.phase, 0), total)
            self.working = max(self.working, total) if self.loaded else 0
            time.sleep(0.05)

    def high_water_marks(self) -> dict:
        """The kernel's own peak (VmHWM) of each worker process."""
        marks = {}
        for process in tree(self.pid):
            status = Path(f"/proc/{process.pid}/status").read_text()
            marks["main" if process.pid == self.pid else f"pool-{process.pid}"] = int(
                re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
        return marks


def cpu_snapshot(worker: WorkerProcess) -> dict:
    import psutil

    postgres = int((DATA_DIR / "postgres" / "postmaster.pid").read_text().split()[0])
    times = psutil.cpu_times()
    return {"worker": summed(worker.process.pid, cpu_seconds), "postgres": summed(postgres, cpu_seconds),
            "machine": sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))}


def records(since: int = 0) -> list[dict]:
    """What bench/worker_hooks.py wrote: one entry per finished task or loaded pool process."""
    lines = RECORDS.read_text().splitlines() if RECORDS.exists() else []
    return [json.loads(line) for line in lines[since:]]


def batches(since: int, images: int) -> list[dict]:
    """The embedding tasks (since the ``since``-th record) that embedded these images."""
    from similarity.pipeline import EMBED_TASK

    def done():
        found = [r for r in records(since) if r.get("task") == EMBED_TASK and (r["result"] or {}).get("ready")]
        return found if sum(len(r["result"]["ready"]) for r in found) >= images else None

    return wait_for(done, timeout=120, message="the embedding tasks' results")


def queue_size(queue: str) -> int:
    from imagerec.celery import app

    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except connection.channel_errors:  # Redis drops an empty queue's list
            return 0


def wait_idle(worker: WorkerProcess, timeout: float = 300) -> None:
    """Until the queue is empty and the worker has nothing in hand."""
    from imagerec.celery import app

    def idle():
        return queue_size(app.conf.task_default_queue) == 0 and not any(
            (app.control.inspect(destination=[worker.hostname], timeout=5).active() or {}).values())

    wait_for(idle, timeout=timeout, interval=0.2, message="the worker to become idle")


def wait_ready(image_ids: list[int], timeout: float) -> float:
    """Until every image is ready; returns when the last embedding was stored."""
    from django.db.models import Max

    from gallery.models import Image
    from similarity.models import Embedding

    def ready():
        images = Image.objects.filter(pk__in=image_ids)
        failed = {image.embedding_error for image in images.failed()}
        if failed:
            raise RuntimeError(f"Images failed: {failed}")
        return images.ready().count() == len(image_ids)

    wait_for(ready, timeout=timeout, interval=0.05, message="the embeddings")
    return Embedding.objects.filter(image_id__in=image_ids).aggregate(last=Max("created_at"))["last"].timestamp()


def renditions(enabled: bool) -> None:
    """The thumbnail tasks uploads send: on the worker's queue, or held on one no worker reads."""
    from gallery.pipeline import RENDITIONS_TASK
    from imagerec.celery import app

    app.conf.update(task_routes={} if enabled else {RENDITIONS_TASK: {"queue": HELD_QUEUE}})
    purge_queues(HELD_QUEUE)


def gallery_reset() -> None:
    from gallery.models import Image

    Image.objects.all().delete()
    shutil.rmtree(MEDIA_DIR, ignore_errors=True)
    MEDIA_DIR.mkdir(parents=True)


def upload(path: Path, *, stamp_commit: bool = False) -> tuple[int, float]:
    """image_create for one file; returns (image id, commit time)."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from gallery.services import image_create

    content = SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")
    committed = []
    with transaction.atomic():
        if stamp_commit:  # registered ahead of image_create's own callback: it runs right at COMMIT
            transaction.on_commit(lambda: committed.append(time.time()))
        image = image_create(upload=content, caption=path.stem)
    return image.pk, committed[0] if committed else time.time()


def uploads(photos: list[Path]) -> tuple[list[int], dict, float]:
    started, image_ids, seconds = time.time(), [], []
    for path in photos:
        began = time.perf_counter()
        image_ids.append(upload(path)[0])
        seconds.append(time.perf_counter() - began)
    summary = {"images": len(seconds), "rate": len(seconds) / (time.time() - started),
               "p50_ms": 1000 * percentile(seconds, 0.5), "p95_ms": 1000 * percentile(seconds, 0.95)}
    return image_ids, summary, started


# --- Phases ---------------------------------------------------------------------------------


def phase_latency(worker: WorkerProcess, photos: list[Path], spacing: float) -> dict:
    from gallery.models import Image
    from similarity.models import Embedding

    stored, seen = [], []
    for path in photos:
        wait_idle(worker)
        time.sleep(spacing)
        image_id, committed = upload(path, stamp_commit=True)
        wait_for(lambda: Image.objects.filter(pk=image_id).ready().exists(), interval=0.005)
        seen.append(time.time() - committed)
        stored.append(Embedding.objects.get(image_id=image_id).created_at.timestamp() - committed)
    return {"samples": len(stored), "stored_s": stored, "p50_s": percentile(stored, 0.5),
            "p95_s": percentile(stored, 0.95), "max_s": max(stored), "seen_p50_s": percentile(seen, 0.5),
            "seen_p95_s": percentile(seen, 0.95)}


def phase_ingest(worker: WorkerProcess, photos: list[Path], *, drain: bool, thumbnails: bool = False) -> dict:
    """N uploads, either queued while the worker's consumer is cancelled and then released
    (``drain``), or while it consumes; the split comes from the tasks' own timings."""
    from imagerec.celery import app

    wait_idle(worker)  # the tasks left over, which find nothing to do
    gallery_reset()
    renditions(thumbnails)
    queue = app.conf.task_default_queue
    if drain:
        app.control.cancel_consumer(queue, destination=[worker.hostname], reply=True, timeout=10)
    since = len(records())
    image_ids, upload_summary, started = uploads(photos)
    result = {"images": len(image_ids), "upload": upload_summary}
    if drain:
        log(f"  {len(image_ids)} uploads queued in {time.time() - started:.1f} s; releasing the worker")
        cpu, started = cpu_snapshot(worker), time.time()
        app.control.add_consumer(queue, destination=[worker.hostname], reply=True, timeout=10)
    done = wait_ready(image_ids, timeout=600 + len(image_ids))
    if drain:
        spent = {key: value - cpu[key] for key, value in cpu_snapshot(worker).items()}
        result["cpu_ms_per_image"] = {
            "worker": 1000 * spent["worker"] / len(image_ids), "postgres": 1000 * spent["postgres"] / len(image_ids),
            # Everything else the machine did meanwhile: this script's polling, other users.
            "other": 1000 * max(0.0, spent["machine"] - spent["worker"] - spent["postgres"]) / len(image_ids)}
    if thumbnails:
        wait_idle(worker, timeout=600 + len(image_ids))
        result["all_work_done_rate"] = len(image_ids) / (time.time() - started)
    renditions(False)
    found = batches(since, len(image_ids))
    window = done - min(batch["started"] for batch in found)
    result.update(worker_seconds=window, worker_rate=len(image_ids) / window, wall_seconds=done - started,
                  wall_rate=len(image_ids) / (done - started), batches=len(found),
                  images_per_task=statistics.mean(len(b["result"]["ready"]) for b in found),
                  largest_task=max(len(b["result"]["ready"]) for b in found))
    split = {key: 1000 * sum(b["result"]["timings"][key] for b in found) / len(image_ids)
             for key in (*STEPS, "decode_cpu") if key != "other"}
    split["other"] = 1000 * max(0.0, window - sum(b["ended"] - b["started"] for b in found)) / len(image_ids)
    result["split_ms_per_image"] = split
    return result


_network = None


def phase_forward(threads: int, batch_size: int, windows: int = 5, cpu: list | None = None) -> list[float]:
    """The bare network's images per second as the worker runs it, one figure per 2-second window;
    ``cpu`` collects each window's CPU milliseconds per image (all torch threads)."""
    global _network
    from similarity.encoders.registry import get_encoder  # its encoder sets torch's OpenMP policy

    if _network is None:
        # The worker's own network (EMBEDDING_WEIGHTS=random), on the CPU as the worker runs it.
        _network = get_encoder(device="cpu").network

    import torch

    torch.set_num_threads(threads)
    batch = torch.randn(batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    rates = []
    with torch.inference_mode():
        for _ in range(3):
            _network(batch)
        for _ in range(windows):
            count, started, cpu_started = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - started < 2.0:
                _network(batch)
                count += batch_size
            rates.append(count / (time.perf_counter() - started))
            if cpu is not None:
                cpu.append(1000 * (time.process_time() - cpu_started) / count)
    return rates


def phase_variants(photos: list[Path], batch_size: int, cpus: int) -> dict:
    """Decode and forward without the database, three ways of sharing the cores: take turns
    (decode a batch on every core, then run it on every core), overlap (batch n+1 decodes during
    batch n's forward pass: the worker's way), split (torch on one core, decoding on the others)."""
    from concurrent.futures import ThreadPoolExecutor

    from similarity.encoders.registry import get_encoder  # its encoder sets torch's OpenMP policy

    encoder = get_encoder(device="cpu")  # the worker's encoder, as the registry loads it

    import torch

    from imaging import load_rgb

    groups = [photos[start : start + batch_size] for start in range(0, len(photos), batch_size)]

    def prepare(path: Path):
        with open(path, "rb") as handle:
            return encoder.pixels(load_rgb(handle))

    def measure(torch_threads: int, decode_threads: int, overlap: bool) -> float:
        torch.set_num_threads(torch_threads)
        with ThreadPoolExecutor(decode_threads) as pool:
            encoder.embed_pixels(list(pool.map(prepare, groups[0])))  # warm
            started = time.perf_counter()
            in_flight = [pool.submit(prepare, path) for path in groups[0]]
            for index in range(len(groups)):
                pixels = [future.result() for future in in_flight]
                following = groups[index + 1] if index + 1 < len(groups) else []
                if overlap:
                    in_flight = [pool.submit(prepare, path) for path in following]
                encoder.embed_pixels(pixels)
                if not overlap:
                    in_flight = [pool.submit(prepare, path) for path in following]
            return len(photos) / (time.perf_counter() - started)

    variants = {"take turns": (cpus, cpus, False), "overlap": (cpus, cpus, True)}
    if cpus > 1:
        variants["split"] = (1, cpus - 1, True)
    results = {name: {"torch_threads": c[0], "decode_threads": c[1], "rates": []} for name, c in variants.items()}
    for _ in range(2):  # interleaved, so a burst of other work hits all of them alike
        for name, config in variants.items():
            results[name]["rates"].append(measure(*config))
    for result in results.values():
        result["rate"] = max(result["rates"])
    return results


def machine() -> dict:
    import similarity.encoders.resnet18  # noqa: F401  first: it sets torch's OpenMP policy
    from imagerec.cpus import cpu_share

    import PIL
    import psutil
    import torch
    from django.db import connection
    from PIL import features

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version'), extversion FROM pg_extension WHERE extname = 'vector'")
        postgres, pgvector = cursor.fetchone()
    return {"cpu": common.cpu_model(), "cpus": cpu_share(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": sys.version.split()[0], "torch": torch.__version__, "pillow": PIL.__version__,
            "libjpeg_turbo": features.version("jpg") if features.check_feature("libjpeg_turbo") else "no",
            "postgres": postgres, "pgvector": pgvector}


def run(args) -> dict:
    photos = photos_ensure(args.images + args.latency_samples + 1)
    log("Starting the bench services in .devdata/bench-ingest ...")
    RECORDS.unlink(missing_ok=True)
    shutil.rmtree(DATA_DIR / "workers", ignore_errors=True)  # the worker logs of earlier runs
    common.django_setup(
        DATA_DIR, broker=True, MEDIA_ROOT=str(MEDIA_DIR), EMBEDDING_WEIGHTS="random",
        EMBEDDING_BATCH_SIZE=str(args.batch_size), EMBEDDING_CLAIM_BATCHES=str(args.claim_batches),
        BENCH_TASK_RECORDS=str(RECORDS), **({"EMBEDDING_TORCH_THREADS": str(args.threads)} if args.threads else {}))
    from imagerec.celery import app

    purge_queues(app.conf.task_default_queue)
    renditions(False)
    gallery_reset()
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["bench/ingest.py", *sys.argv[1:]]), "spacing": args.spacing,
        "settings": {"images": args.images, "batch_size": args.batch_size, "claim_batches": args.claim_batches,
                     "concurrency": args.concurrency, "photo": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG q{JPEG_QUALITY}",
                     "photo_mb": statistics.mean(path.stat().st_size for path in photos) / 1e6},
        "machine": machine(),
    }
    worker = WorkerProcess(dict(os.environ), concurrency=args.concurrency,
                           arguments=("--include=bench.worker_hooks",))
    try:
        log(f"Starting the worker (prefork, concurrency {args.concurrency}) ...")
        started = time.time()
        worker.start(DATA_DIR / "workers")
        memory = Memory(worker.process.pid)
        result["worker_start_s"] = time.time() - started
        warm_id, _ = upload(photos[-1])
        wait_ready([warm_id], timeout=300)
        result["first_upload_s"] = time.time() - started - result["worker_start_s"]
        loaded = [r for r in records() if r.get("event") == "process_ready"]
        result["network_loaded_s"] = max(r["at"] for r in loaded) - started
        threads = result["settings"]["torch_threads"] = loaded[0]["threads"]
        memory.loaded = True
        log(f"Worker warm: {threads} torch thread(s); first upload embedded in {result['first_upload_s']:.2f} s")

        memory.phase = "latency"
        log(f"Latency: {args.latency_samples} single uploads to the idle worker ...")
        result["latency"] = phase_latency(worker, photos[args.images : args.images + args.latency_samples], args.spacing)
        # The forward pass alone right before and after the drain: the ratio compares figures
        # measured under the same conditions (the machine is shared).
        memory.phase = "idle"
        forward_cpu = []
        forward = phase_forward(threads, args.batch_size, windows=4, cpu=forward_cpu)
        log(f"Drain: {args.images} uploads queued, then the worker released ...")
        memory.phase = "drain"
        result["drain"] = phase_ingest(worker, photos[: args.images], drain=True)
        memory.phase = "idle"
        wait_idle(worker)
        forward += phase_forward(threads, args.batch_size, windows=4, cpu=forward_cpu)
        result["forward"] = {"threads": threads, "batch_size": args.batch_size, "windows": forward,
                             "rate": statistics.median(forward), "cpu_ms_per_image": statistics.median(forward_cpu)}
        log(f"Live: {args.images} uploads while the worker consumes ...")
        memory.phase = "live"
        result["live"] = phase_ingest(worker, photos[: args.images], drain=False)
        if not args.skip_renditions:
            log(f"Live with thumbnails: {args.images} uploads ...")
            memory.phase = "live_renditions"
            result["live_renditions"] = phase_ingest(worker, photos[: args.images], drain=False, thumbnails=True)
        memory.phase = "idle"
        wait_idle(worker)
        cpus = result["machine"]["cpus"]
        if not args.skip_variants:
            log("Decode and forward without the database, three ways of sharing the cores ...")
            result["variants"] = phase_variants(photos[: min(96, args.images)], args.batch_size, cpus)
            result["forward_1_thread"] = statistics.median(phase_forward(1, args.batch_size, windows=3))
        result["memory"] = {"peak_tree_rss": memory.peak, "peak_tree_rss_working": memory.working,
                            "peak_tree_rss_by_phase": memory.by_phase, "high_water_marks": memory.high_water_marks()}
    finally:
        worker.stop()
        if not args.keep_services:
            common.servers_stop(DATA_DIR)
    result["ratio"] = result["drain"]["worker_rate"] / result["forward"]["rate"]
    result["live_ratio"] = result["live"]["worker_rate"] / result["forward"]["rate"]
    # The same comparison in CPU time, which the machine's other work disturbs far less.
    result["cpu_ratio"] = result["forward"]["cpu_ms_per_image"] / result["drain"]["cpu_ms_per_image"]["worker"]
    return result


# --- Report ---------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def met(condition: bool) -> str:
    return "met" if condition else "**not met**"


def plot(run: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rates, split, latency) = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.2, 1.3, 1]})
    forward = run["forward"]["rate"]
    bars = [("forward\nalone", forward, "#4c72b0"), ("worker\ndeep\nqueue", run["drain"]["worker_rate"], "#55a868"),
            ("worker\nlive\nuploads", run["live"]["worker_rate"], "#8fbc8f"),
            ("wall\nclock\nlive", run["live"]["wall_rate"], "#c44e52"),
            *([("wall\nclock\n+thumbs", run["live_renditions"]["wall_rate"], "#dd8452")] if "live_renditions" in run
              else []),
            ("uploads\nalone\n(web)", run["drain"]["upload"]["rate"], "#8172b2")]
    names, heights, colours = zip(*bars)
    rates.bar(range(len(heights)), heights, color=colours)
    rates.set_xticks(range(len(heights)), names, fontsize=7.5)
    rates.set(ylabel="images per second", title="Throughput", ylim=(0, max(heights) * 1.25))
    for index, value in enumerate(heights):
        rates.text(index, value, f"{value:.1f}" + (f"\n{value / forward:.2f}x" if index else ""), ha="center",
                   va="bottom", fontsize=8)
    rates.axhline(GOAL_RATIO * forward, color="grey", linestyle="--", linewidth=1)
    rates.text(len(heights) - 0.6, GOAL_RATIO * forward, f"goal {GOAL_RATIO}x forward", ha="right", va="bottom",
               fontsize=7, color="grey")

    left, steps = 0.0, run["drain"]["split_ms_per_image"]
    for (key, label), colour in zip(STEPS.items(), ["#937860", "#c44e52", "#4c72b0", "#55a868", "#da8bc3", "#8c8c8c"]):
        split.barh(1, steps[key], left=left, color=colour, label=f"{label}: {steps[key]:.1f} ms")
        left += steps[key]
    threads = run["forward"]["threads"]
    decode = steps["decode_cpu"] / threads
    split.barh(0, decode, color="#dd8452", label=f"decode + resize, spread over {threads} cores: {decode:.1f} ms")
    split.barh(0, 1000 / forward, left=decode, color="#a1c9f4", label=f"forward pass alone: {1000 / forward:.1f} ms")
    split.set_yticks([0, 1], ["the work\nalone", "worker\nwall clock"])
    split.set(xlabel="milliseconds per image", title=f"Where a deep queue's time goes ({run['drain']['images']} images)")
    split.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)

    milliseconds = [value * 1000 for value in run["latency"]["stored_s"]]
    latency.hist(milliseconds, bins=min(20, max(5, len(milliseconds) // 2)), color="#4c72b0")
    for label, value, style in (("p50", run["latency"]["p50_s"], "-"), ("p95", run["latency"]["p95_s"], "--")):
        latency.axvline(value * 1000, color="black", linestyle=style, linewidth=1)
        latency.text(value * 1000, latency.get_ylim()[1] * 0.95, f" {label} {value * 1000:.0f} ms", fontsize=8)
    latency.set(xlabel="commit -> embedding stored (ms)", ylabel="uploads",
                title=f"One upload, idle warm worker ({run['latency']['samples']})")
    figure.tight_layout()
    figure.savefig(PLOT_FILE, dpi=110)
    plt.close(figure)


def values(runs: list[dict], run: dict) -> tuple[dict, dict]:
    """The figures in docs/ingestion.md (from the run shown and all runs), and in the Ingestion
    section of docs/benchmarks.md."""
    drain, live, latency, forward, machine_, settings, memory = (run[key] for key in (
        "drain", "live", "latency", "forward", "machine", "settings", "memory"))
    split, cpu, threads = drain["split_ms_per_image"], drain["cpu_ms_per_image"], forward["threads"]
    decode_share = split["decode_cpu"] / threads
    bound = (1000 / forward["rate"]) / (1000 / forward["rate"] + decode_share)
    wall = 1000 / drain["worker_rate"]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f}"

    out = {
        "photo": settings["photo"], "photo_mb": f"{settings['photo_mb']:.1f}",
        "photos_gb": f"{(settings['images'] + latency['samples'] + 1) * settings['photo_mb'] / 1000:.1f}",
        "machine": "\n".join([
            f"- CPU: {machine_['cpu']}, {machine_['cpus']} cores, {machine_['memory_gib']} GiB; Python "
            f"{machine_['python']}, torch {machine_['torch']}, Pillow {machine_['pillow']} (libjpeg-turbo "
            f"{machine_['libjpeg_turbo']}), PostgreSQL {machine_['postgres']} with pgvector {machine_['pgvector']}",
            f"- Worker: `celery worker --pool=prefork --concurrency={settings['concurrency']}`, {threads} torch threads "
            f"and {threads} decode threads (its CPU share), `EMBEDDING_BATCH_SIZE={settings['batch_size']}`, "
            f"`EMBEDDING_CLAIM_BATCHES={settings['claim_batches']}`",
            f"- Run: {run['when']}, `{run['command']}`."]),
        "goal": GOAL_RATIO, "ratio": f"{run['ratio']:.2f}", "ratio_met": met(run["ratio"] >= GOAL_RATIO),
        "worker_rate": f"{drain['worker_rate']:.1f}", "forward_rate": f"{forward['rate']:.1f}",
        "cpu_ratio": f"{run['cpu_ratio']:.2f}", "forward_cpu": f"{forward['cpu_ms_per_image']:.1f}",
        "worker_cpu": f"{cpu['worker']:.1f}", "postgres_cpu": f"{cpu['postgres']:.1f}", "other_cpu": f"{cpu['other']:.1f}",
        "latency_p50": ms(latency["p50_s"]), "latency_p95": ms(latency["p95_s"]), "latency_max": ms(latency["max_s"]),
        "seen_p50": ms(latency["seen_p50_s"]), "seen_p95": ms(latency["seen_p95_s"]),
        "latency_met": met(latency["p50_s"] <= GOAL_LATENCY), "latency_samples": latency["samples"],
        "spacing": f"{run['spacing']:.1f}", "batch_size": forward["batch_size"], "threads": threads,
        "windows": len(forward["windows"]), "drain_images": drain["images"],
        "live_worker_rate": f"{live['worker_rate']:.1f}", "live_ratio": f"{run['live_ratio']:.2f}",
        "live_wall_rate": f"{live['wall_rate']:.1f}", "live_wall_ratio": f"{live['wall_rate'] / forward['rate']:.2f}",
        "upload_rate": f"{drain['upload']['rate']:.1f}", "upload_p50": f"{drain['upload']['p50_ms']:.0f}",
        "upload_p95": f"{drain['upload']['p95_ms']:.0f}",
        "tasks": drain["batches"], "per_task": f"{drain['images_per_task']:.0f}", "largest_task": drain["largest_task"],
        **{f"split.{key}": f"{split[key]:.1f}" for key in STEPS},
        **{f"share.{key}": f"{split[key] / wall:.0%}" for key in STEPS},
        "split_total": f"{wall:.1f}", "decode_cpu_ms": f"{split['decode_cpu']:.1f}",
        "forward_wall_ms": f"{1000 / forward['rate']:.1f}", "decode_cpu": f"{split['decode_cpu']:.0f}",
        "decode_share": f"{decode_share:.0f}", "forward_ms": f"{1000 / forward['rate']:.0f}", "bound": f"{bound:.2f}",
        "of_bound": f"{run['ratio'] / bound:.0%}",
        "worker_start": f"{run['worker_start_s']:.1f}", "loaded": f"{run['network_loaded_s']:.1f}",
        "first_upload": f"{run['first_upload_s']:.1f}",
        "peak_working": mib(memory["peak_tree_rss_working"]), "peak_all": mib(memory["peak_tree_rss"]),
        "hwm_main": mib(memory["high_water_marks"]["main"]),
        "hwm_pool": mib(max(v for k, v in memory["high_water_marks"].items() if k != "main")),
        "phase_peaks": ", ".join(f"{name.replace('_', ' ')} {mib(value)} MiB"
                                 for name, value in memory["peak_tree_rss_by_phase"].items()),
        "runs": common.table(["When", "Worker, deep queue", "Forward", "Ratio", "CPU ratio", "Wall clock, live",
                              "p50 / p95 latency", "Peak RSS ingesting"], [
            [each["when"] + (" (shown)" if each is run else ""), f"{each['drain']['worker_rate']:.1f}",
             f"{each['forward']['rate']:.1f}", f"{each['ratio']:.2f}", f"{each['cpu_ratio']:.2f}",
             f"{each['live']['wall_rate']:.1f}", f"{ms(each['latency']['p50_s'])} / {ms(each['latency']['p95_s'])} ms",
             f"{mib(each['memory']['peak_tree_rss_working'])} MiB"] for each in runs], "lrrrrrrr"),
    }
    if "live_renditions" in run:
        thumbs = run["live_renditions"]
        out.update(thumbs_rate=f"{thumbs['wall_rate']:.1f}", thumbs_all_rate=f"{thumbs['all_work_done_rate']:.1f}",
                   thumbs_ratio=f"{thumbs['wall_rate'] / forward['rate']:.2f}",
                   thumbs_late=f"{thumbs['wall_seconds'] / live['wall_seconds']:.2f}",
                   rendition_ms=f"{1000 * (1 / thumbs['all_work_done_rate'] - 1 / live['wall_rate']):.0f}",
                   embed_ms=f"{1000 / live['wall_rate']:.0f}", all_ms=f"{1000 / thumbs['all_work_done_rate']:.0f}")
    for name, variant in run.get("variants", {}).items():
        same_threads = forward["rate"] if variant["torch_threads"] == threads else run["forward_1_thread"]
        key = f"variant.{name.replace(' ', '_')}"
        out.update({f"{key}.torch_threads": variant["torch_threads"], f"{key}.decode_threads": variant["decode_threads"],
                    f"{key}.rate": f"{variant['rate']:.1f}", f"{key}.ratio": f"{variant['rate'] / same_threads:.2f}",
                    "variant_images": min(96, drain["images"])})
    rates = [each["drain"]["worker_rate"] for each in runs]
    ratios, cpu_ratios = [each["ratio"] for each in runs], [each["cpu_ratio"] for each in runs]
    out.update(run_count=len(runs), rate_min=f"{min(rates):.1f}", rate_max=f"{max(rates):.1f}",
               spread=f"{(max(rates) - min(rates)) / max(rates):.0%}", ratio_min=f"{min(ratios):.2f}",
               ratio_max=f"{max(ratios):.2f}", cpu_min=f"{min(cpu_ratios):.2f}", cpu_max=f"{max(cpu_ratios):.2f}")
    summary = {"images": drain["images"], "photo_size": "×".join(settings["photo"].split()[0].split("x")),
               "worker_rate": out["worker_rate"], "forward_rate": out["forward_rate"], "ratio": out["ratio"],
               "bound": f"{bound:.1f}", "latency_p50": out["latency_p50"], "latency_p95": out["latency_p95"],
               "peak_gb": f"{memory['peak_tree_rss_working'] / 2**30:.1f}"}
    return out, {f"ingest.{key}": value for key, value in summary.items()}


def write_report(runs: list[dict]) -> None:
    run = max(runs, key=lambda each: each["drain"]["worker_rate"])  # the best: least disturbed by other work
    plot(run)
    out, summary = values(runs, run)
    common.fill(DOCS_FILE, out)
    common.fill(common.DOCS_DIR / "benchmarks.md", summary, others=("",))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--images", type=int, default=500, help="photos per throughput phase (default 500)")
    add("--batch-size", type=int, default=16, help="EMBEDDING_BATCH_SIZE (default 16)")
    add("--claim-batches", type=int, default=4, help="EMBEDDING_CLAIM_BATCHES (default 4)")
    add("--concurrency", type=int, default=1, help="worker pool processes (default 1)")
    add("--threads", type=int, default=0, help="EMBEDDING_TORCH_THREADS (default: the CPU share)")
    add("--latency-samples", type=int, default=20, help="single uploads timed (default 20)")
    add("--spacing", type=float, default=1.0, help="idle seconds before each single upload")
    add("--skip-renditions", action="store_true", help="leave out the phase with thumbnails")
    add("--skip-variants", action="store_true", help="leave out the core-sharing comparison")
    add("--keep-services", action="store_true", help="leave the bench PostgreSQL and Redis running")
    add("--report-only", action="store_true", help="rewrite the docs page from the saved runs")
    add("--no-save", action="store_true", help="do not add this run to the saved runs or the docs")
    args = parser.parse_args()
    runs = common.load("ingest-runs.json", [])
    if not args.report_only:
        result = run(args)
        log(f"worker, deep queue {result['drain']['worker_rate']:.1f} images/s, forward alone "
            f"{result['forward']['rate']:.1f} (ratio {result['ratio']:.2f}); idle latency p50 "
            f"{result['latency']['p50_s'] * 1000:.0f} ms")
        if args.no_save:
            return 0
        runs.append(result)
        common.save("ingest-runs.json", runs)
    if not runs:
        raise SystemExit("No saved runs; run without --report-only first.")
    write_report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
