"""Pages under load: the site under gunicorn with production settings, driven by wrk.

Assumes the bench database holds the images and vectors (``nn.run_size`` or
``nn.site_table_prepare``). Each request asks for a random image, so the HNSW index is
exercised across the whole graph.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common
from common import log

HOST = "bench.example"
HEADERS = {"Host": HOST, "X-Forwarded-Proto": "https"}
PAGES = {"gallery": "/", "recommendation": "/images/{id}/", "similar_json": "/api/images/{id}/similar/"}
WRK_SCRIPT = r"""
local images = tonumber(os.getenv("BENCH_IMAGES"))
local first = tonumber(os.getenv("BENCH_FIRST") or "1")
local template = os.getenv("BENCH_PATH")
wrk.headers["Host"] = "%(host)s"
-- Production settings redirect plain HTTP: the proxy in front says the request came over HTTPS.
wrk.headers["X-Forwarded-Proto"] = "https"
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):match("0x(%%x+)"), 16) %% 100000)
end
function request()
  return wrk.format("GET", (template:gsub("{id}", tostring(math.random(first, first + images - 1)))))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests": %%d, "duration_us": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\n', summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
""" % {"host": HOST}


def gunicorn_start(workers: int) -> tuple[subprocess.Popen, int]:
    """gunicorn with fixed options (the earlier runs' set-up), production settings, no broker."""
    return _gunicorn(
        ["imagerec.wsgi:application", "--workers", str(workers), "--backlog", "256", "--log-level", "warning"],
        broker_url="redis://127.0.0.1:1/0",  # pages enqueue nothing
        probe="/images/1/",
    )


def wrk(port: int, path: str, images: int, connections: int, seconds: float, script: str) -> dict:
    output = subprocess.run(
        ["wrk", "--threads", str(min(2, connections)), "--connections", str(connections), "--duration",
         f"{int(seconds)}s", "--timeout", "10s", "--script", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, env={**os.environ, "BENCH_IMAGES": str(images), "BENCH_PATH": path},
        timeout=seconds + 60,
    ).stdout
    raw = json.loads(next(line for line in output.splitlines() if line.startswith("BENCH_JSON ")).split(" ", 1)[1])
    return {"connections": connections, "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            **{f"p{q}_ms": round(raw[f"p{q}_us"] / 1000, 2) for q in (50, 95, 99)},
            "requests": raw["requests"], "errors": raw["errors"]}


def queries_per_page(images: int) -> dict:
    """SQL queries each page sends for a small and a large k, counted through Django."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client, counts = Client(HTTP_HOST="localhost"), {}
    for name, template in PAGES.items():
        for k in (1, 20):
            path = template.format(id=images // 2) + f"?k={k}"
            client.get(path)
            with CaptureQueriesContext(connection) as captured:
                assert client.get(path).status_code == 200, path
            counts.setdefault(name, {})[f"k={k}"] = len(captured)
    return counts


def run(images: int, *, workers: int, connection_levels: list[int], seconds: float) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("The page benchmark needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk).")
    result = {"images": images, "workers": workers, "seconds": seconds, "queries_per_page": queries_per_page(images)}
    log(f"pages at {images:,} images: SQL queries per page {result['queries_per_page']}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        server, port = gunicorn_start(workers)
        try:
            for name, path in PAGES.items():
                wrk(port, path, images, 4, 2, script.name)  # warm every worker's connection and caches
                result[name] = []
                for connections in connection_levels:
                    result[name].append(wrk(port, path, images, connections, seconds, script.name))
                    log(f"  {name} c={connections}: {result[name][-1]['rps']} req/s, "
                        f"p95 {result[name][-1]['p95_ms']} ms")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return result


# --- Visitors: recommendations cached and uncached, under gunicorn as production runs it ----------

VISITOR_PAGES = {"recommendation": "/images/{id}/", "similar_json": "/api/images/{id}/similar/"}


def gunicorn_production(broker_url: str, workers: int | None = None, **extra: str) -> tuple[subprocess.Popen, int]:
    """gunicorn with the site's own configuration (imagerec/gunicorn.py: its worker count, access
    log and keep-alive), production settings, the broker's Redis (and the cache in it, as the
    settings place it by default)."""
    if workers:
        extra["WEB_CONCURRENCY"] = str(workers)
    return _gunicorn(["--config", "python:imagerec.gunicorn", "imagerec.wsgi"], broker_url=broker_url, probe="/", **extra)


def _gunicorn(arguments: list[str], *, broker_url: str, probe: str, **extra: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "IMAGEREC_"))}
    environment.update(DJANGO_SETTINGS_MODULE="imagerec.settings.production", SECRET_KEY="bench-" + "x" * 40,
                       DEBUG="false", ALLOWED_HOSTS=HOST, DATABASE_URL=os.environ["DATABASE_URL"],
                       CELERY_BROKER_URL=broker_url, METRICS_PUBLIC="true", STATIC_ROOT=str(common.DATA_DIR / "static"), **extra)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=common.ROOT,
                   env=environment, check=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *arguments],
        cwd=common.ROOT, env=environment, stdout=subprocess.DEVNULL,  # the access log, as a platform would take it
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{probe}", headers=HEADERS),
                                        timeout=5):
                return process, port
        except OSError as error:  # HTTPError included: an error page means a broken set-up
            if process.poll() is not None or time.monotonic() > deadline or hasattr(error, "code"):
                process.kill()
                raise RuntimeError(f"gunicorn did not serve the site: {error}") from None
            time.sleep(0.3)


def cache_flush(broker_url: str) -> None:
    """Every cached recommendation list dropped (what a bumped generation amounts to)."""
    import redis

    from imagerec.settings.base import redis_cache_location

    redis.Redis.from_url(redis_cache_location(broker_url)).flushdb()


def fetch(port: int, path: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=HEADERS),
                                timeout=30) as response:
        response.read()


def queries_cold_and_warm(images: int) -> dict:
    """SQL queries per page with the list computed, then read from the cache."""
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client, counts = Client(HTTP_HOST="localhost"), {}
    for name, template in VISITOR_PAGES.items():
        path = template.format(id=images // 3)
        cache.clear()
        for state in ("uncached", "cached"):
            with CaptureQueriesContext(connection) as captured:
                assert client.get(path).status_code == 200, path
            counts.setdefault(name, {})[state] = len(captured)
    return counts


def cpu_seconds_by_part(server_pid: int) -> dict:
    """CPU seconds spent so far by gunicorn (master and workers), the bench's PostgreSQL and
    Redis (each process tree), and this script's children (wrk): what each request costs the
    cores whatever else the machine is doing."""
    import resource

    import psutil

    from devtools import services

    def tree(pid):
        try:
            root = psutil.Process(pid)
            total = 0.0
            for process in [root, *root.children(recursive=True)]:
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            return total
        except psutil.NoSuchProcess:
            return 0.0

    postmaster = int((common.DATA_DIR / "postgres" / "postmaster.pid").read_text().split()[0])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"gunicorn": tree(server_pid), "postgres": tree(postmaster),
            "redis": tree(services._redis_pid(common.DATA_DIR) or 0),
            "wrk": children.ru_utime + children.ru_stime}


def wrk_accounted(server_pid: int, *args) -> dict:
    """wrk's figures, with the CPU milliseconds per request of each part and the machine's load."""
    before = cpu_seconds_by_part(server_pid)
    row = wrk(*args)
    after = cpu_seconds_by_part(server_pid)
    # A PostgreSQL backend that ended meanwhile (gunicorn reconnects after CONN_MAX_AGE) takes
    # its CPU time with it: such a window has no figure for PostgreSQL.
    row["cpu_ms_per_request"] = {part: round(1000 * (after[part] - before[part]) / max(1, row["requests"]), 2)
                                 if after[part] >= before[part] else None for part in after}
    row["load_average"] = round(os.getloadavg()[0], 1)
    return row


def run_visitors(images: int, *, broker_url: str, connection_levels: list[int], seconds: float,
                 cached_images: int = 200, workers: int | None = None, profile_dir=None,
                 gunicorn_arguments: str = "") -> dict:
    """Each page uncached (every request a random one of ``images``, the cache flushed first:
    about one request in a hundred finds its list already there) and cached (``cached_images``
    URLs requested once beforehand, then repeated)."""
    if shutil.which("wrk") is None:
        raise SystemExit("The page benchmark needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk).")
    result = {"images": images, "seconds": seconds, "cached_images": cached_images,
              "queries_per_page": queries_cold_and_warm(images)}
    log(f"visitors at {images:,} images: SQL queries per page {result['queries_per_page']}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        # GUNICORN_CMD_ARGS, as a platform would set it: a variant of the site's configuration.
        server, port = gunicorn_production(broker_url, workers,
                                           **({"GUNICORN_CMD_ARGS": gunicorn_arguments} if gunicorn_arguments else {}))
        try:
            import psutil

            result["workers"] = len(psutil.Process(server.pid).children())
            for name, path in VISITOR_PAGES.items():
                wrk(port, path, images, 4, 2, script.name)  # warm every worker's connection
                for state in ("uncached", "cached"):
                    rows = result.setdefault(name, {})[state] = []
                    for connections in connection_levels:
                        cache_flush(broker_url)
                        if state == "cached":
                            for image_id in range(1, cached_images + 1):
                                fetch(port, path.format(id=image_id))
                        rows.append(wrk_accounted(server.pid, port, path,
                                                  cached_images if state == "cached" else images, connections,
                                                  seconds, script.name))
                        log(f"  {name} {state} c={connections}: {rows[-1]['rps']} req/s, "
                            f"p50 {rows[-1]['p50_ms']} ms, p95 {rows[-1]['p95_ms']} ms, CPU ms/request "
                            f"{rows[-1]['cpu_ms_per_request']}, load {rows[-1]['load_average']}")
            if profile_dir is not None:
                result["profiles"] = profile(server.pid, port, images, broker_url, script.name, profile_dir)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return result


def profile(server_pid: int, port: int, images: int, broker_url: str, script: str, out_dir) -> dict:
    """py-spy on every gunicorn worker while wrk drives each page uncached: where the time goes."""
    import psutil

    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = {}
    for name, path in VISITOR_PAGES.items():
        cache_flush(broker_url)
        spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(child.pid), "--duration", "8", "--rate", "200",
                                   "--format", "raw", "--output", str(out_dir / f"{name}-{child.pid}.txt"), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for child in psutil.Process(server_pid).children()]
        time.sleep(1)
        wrk(port, path, images, 4, 8, script)
        for spy in spies:
            spy.wait(timeout=60)
        profiles[name] = sorted(str(p) for p in out_dir.glob(f"{name}-*.txt"))
    return profiles
