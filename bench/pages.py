"""Pages under load: the site under gunicorn with production settings, driven by wrk.

Assumes the bench database already holds the images and vectors (``nn.run_size``). Each
request picks a random image, so the HNSW index is exercised across the whole graph.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import common
from common import log

HOST = "bench.example"
PAGES = {
    "gallery": "/",
    "recommendation": "/images/{id}/",
    "similar_json": "/api/images/{id}/similar/",
}

WRK_SCRIPT = r"""
local images = tonumber(os.getenv("BENCH_IMAGES"))
local template = os.getenv("BENCH_PATH")
wrk.headers["Host"] = "%(host)s"

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):match("0x(%%x+)"), 16) %% 100000)
end

function request()
  local path = template:gsub("{id}", tostring(math.random(1, images)))
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d, "mean_us": %%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
""" % {"host": HOST}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def production_environment(socket_dir) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "IMAGEREC_"))}
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "imagerec.settings.production",
            "SECRET_KEY": "bench-" + "x" * 40,
            "DEBUG": "false",
            "ALLOWED_HOSTS": HOST,
            "DATABASE_URL": f"postgres://postgres@/imagerec?host={socket_dir}",
            # Nothing is enqueued by these pages; production only insists on a URL.
            "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        }
    )
    return environment


class Gunicorn:
    def __init__(self, socket_dir, workers: int):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [
                str(common.ROOT / ".venv" / "bin" / "gunicorn"),
                "imagerec.wsgi:application",
                "--workers", str(workers),
                "--bind", f"127.0.0.1:{self.port}",
                "--backlog", "256",
                "--log-level", "warning",
            ],
            cwd=common.ROOT,
            env=production_environment(socket_dir),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("gunicorn exited: " + open(self.log.name).read()[-2000:])
            try:
                request = urllib.request.Request(self.url("/images/1/"), headers={"Host": HOST})
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                raise RuntimeError(f"gunicorn answered {error.code}; is the bench database migrated?") from None
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("gunicorn did not answer within 60 s")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wrk(server: Gunicorn, path: str, images: int, connections: int, seconds: float, script: str) -> dict:
    environment = {**os.environ, "BENCH_IMAGES": str(images), "BENCH_PATH": path}
    command = [
        "wrk", "--threads", str(min(2, connections)), "--connections", str(connections),
        "--duration", f"{int(seconds)}s", "--timeout", "10s", "--script", script, server.url("/"),
    ]
    output = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=seconds + 60).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "rps": round(raw["requests"] / duration, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "requests": raw["requests"],
        "errors": raw["non_2xx"] + raw["socket_errors"],
    }


def queries_per_page(images: int) -> dict:
    """SQL queries each page sends, for a small and a large k, counted through Django."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="localhost")
    counts = {}
    for name, template in PAGES.items():
        for k in (1, 20):
            path = template.format(id=images // 2) + f"?k={k}"
            client.get(path)
            with CaptureQueriesContext(connection) as captured:
                status = client.get(path).status_code
            assert status == 200, (path, status)
            counts.setdefault(name, {})[f"k={k}"] = len(captured)
    return counts


def run(images: int, *, workers: int, connection_levels: list[int], seconds: float) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit(
            "The page benchmark needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)."
        )
    socket_dir = common.cluster_start()
    result = {"images": images, "workers": workers, "seconds": seconds, "queries_per_page": queries_per_page(images)}
    log(f"pages at {images:,} images: SQL queries per page {result['queries_per_page']}")
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(WRK_SCRIPT)
    script.close()
    server = Gunicorn(socket_dir, workers)
    try:
        for name, path in PAGES.items():
            wrk(server, path, images, 4, 2, script.name)  # warm every worker's connection and caches
            runs = []
            for connections in connection_levels:
                runs.append(wrk(server, path, images, connections, seconds, script.name))
                log(f"  {name} c={connections}: {runs[-1]['rps']} req/s, p95 {runs[-1]['p95_ms']} ms")
            result[name] = runs
    finally:
        server.stop()
        os.unlink(server.log.name)
        os.unlink(script.name)
    return result
