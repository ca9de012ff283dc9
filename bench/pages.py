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

import common
from common import log

HOST = "bench.example"
PAGES = {"gallery": "/", "recommendation": "/images/{id}/", "similar_json": "/api/images/{id}/similar/"}
WRK_SCRIPT = r"""
local images = tonumber(os.getenv("BENCH_IMAGES"))
local template = os.getenv("BENCH_PATH")
wrk.headers["Host"] = "%(host)s"
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):match("0x(%%x+)"), 16) %% 100000)
end
function request()
  return wrk.format("GET", (template:gsub("{id}", tostring(math.random(1, images)))))
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "IMAGEREC_"))}
    environment.update(DJANGO_SETTINGS_MODULE="imagerec.settings.production", SECRET_KEY="bench-" + "x" * 40,
                       DEBUG="false", ALLOWED_HOSTS=HOST, DATABASE_URL=os.environ["DATABASE_URL"],
                       CELERY_BROKER_URL="redis://127.0.0.1:1/0",  # pages enqueue nothing
                       STATIC_ROOT=str(common.DATA_DIR / "static"))
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=common.ROOT,
                   env=environment, check=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "imagerec.wsgi:application", "--workers", str(workers),
         "--bind", f"127.0.0.1:{port}", "--backlog", "256", "--log-level", "warning"],
        cwd=common.ROOT, env=environment,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/images/1/", headers={"Host": HOST})
            with urllib.request.urlopen(request, timeout=5):
                return process, port
        except OSError as error:  # HTTPError included: an error page means a broken set-up
            if process.poll() is not None or time.monotonic() > deadline or hasattr(error, "code"):
                process.kill()
                raise RuntimeError(f"gunicorn did not serve the site: {error}") from None
            time.sleep(0.3)


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
