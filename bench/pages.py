"""Pages against the stack's floor: each page's req/s as a ratio to ``/healthz`` in the same round.

gunicorn as production runs it (``--config python:imagerec.gunicorn``, production settings, the
cache in the bench's Redis), driven by wrk on loopback. One run measures, interleaved, round
after round:

- the floor: ``/healthz`` (Django, its middleware and gunicorn, no view work), at the start and
  at the end of each round, and a static file through WhiteNoise;
- cached pages: the same URLs repeated (each requested once beforehand);
- conditional requests: a page's own ETag in ``If-None-Match``, answered 304;
- uncached pages: a random URL each time out of thousands, the cache flushed first.

Absolute req/s on a shared machine say little; the ratio to the floor measured minutes apart on
the same cores holds on any machine. Beside each figure, the CPU each request cost each part
(gunicorn, PostgreSQL, Redis, wrk) and the page cache's hits and misses from ``/metrics``.
Assumes the bench database holds the site's tables (``nn.site_table_prepare``) and the bench
tag (``tags.tag_prepare``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import common
from common import log

HOST = "bench.example"
HEADERS = {"Host": HOST, "X-Forwarded-Proto": "https"}
PARTS = ("gunicorn", "postgres", "redis", "wrk")
P95_GOAL_MS = 50
CACHED_URLS = 200
WRK_SCRIPT = r"""
local first = tonumber(os.getenv("BENCH_FIRST"))
local count = tonumber(os.getenv("BENCH_COUNT"))
local template = os.getenv("BENCH_PATH")
local expected = tonumber(os.getenv("BENCH_STATUS"))
local etag = os.getenv("BENCH_IF_NONE_MATCH") or ""
wrk.headers["Host"] = "%(host)s"
-- A browser's user agent: pages count the lists they show for browsers only (clicks/).
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
-- Production settings redirect plain HTTP: the proxy in front says the request came over HTTPS.
wrk.headers["X-Forwarded-Proto"] = "https"
if etag ~= "" then wrk.headers["If-None-Match"] = etag end
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  unexpected = 0
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):match("0x(%%x+)"), 16) %% 100000)
end
function request()
  return wrk.format("GET", (template:gsub("{n}", tostring(math.random(first, first + count - 1)))))
end
function response(status, headers, body)
  if status ~= expected then unexpected = unexpected + 1 end
end
function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("unexpected") end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "unexpected_status": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, wrong,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
""" % {"host": HOST}


class Target:
    """One row of the benchmark: a path template whose ``{n}`` wrk fills with a random integer
    in [first, first + count - 1] for every request."""

    def __init__(self, name: str, label: str, group: str, goal: float | None, path: str, *, first: int = 1,
                 count: int = 1, status: int = 200, if_none_match: str = "", warm: bool = False,
                 flush: bool = False):
        self.name, self.label, self.group, self.goal = name, label, group, goal
        self.path, self.first, self.count, self.status = path, first, count, status
        self.if_none_match, self.warm, self.flush = if_none_match, warm, flush

    def urls(self) -> list[str]:
        return [self.path.replace("{n}", str(n)) for n in range(self.first, self.first + self.count)]

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "group": self.group, "goal": self.goal, "path": self.path,
                "first": self.first, "count": self.count, "status": self.status}


def targets(images: int, *, tag_slug: str, tag_images: int, static_path: str, etag: str) -> list[Target]:
    """The rows, in the order a round measures them (``/healthz`` again closes the round)."""
    from django.conf import settings

    pages = -(-images // settings.GALLERY_PAGE_SIZE)
    tag_pages = -(-tag_images // settings.GALLERY_PAGE_SIZE)
    deep = max(1, pages - CACHED_URLS + 1)
    rows = [
        Target("healthz", "`/healthz`", "floor", None, "/healthz"),
        Target("static", "a static file through WhiteNoise", "floor", None, static_path),
        Target("recommendation_cached", "recommendation page", "cached", 0.8, "/images/{n}/", count=CACHED_URLS,
               warm=True),
        Target("similar_json_cached", "`/api/images/<id>/similar/`", "cached", 0.8, "/api/images/{n}/similar/",
               count=CACHED_URLS, warm=True),
        Target("gallery_first_cached", "gallery page 1", "cached", 0.8, "/", warm=True),
        Target("gallery_deep_cached", f"gallery, deep (pages {deep:,}–{pages:,})", "cached", 0.8, "/?page={n}",
               first=deep, count=pages - deep + 1, warm=True),
        Target("gallery_tag_cached", f"gallery filtered by a tag (its {min(tag_pages, CACHED_URLS)} pages)", "cached",
               0.8, f"/?tag={tag_slug}&page={{n}}", count=min(tag_pages, CACHED_URLS), warm=True),
        Target("recommendation_304", "recommendation page, `If-None-Match` → 304", "conditional", 0.8,
               f"/images/{images // 2}/", status=304, if_none_match=etag),
        Target("recommendation_uncached", f"recommendation page (any of {images:,})", "uncached", 0.25,
               "/images/{n}/", count=images, flush=True),
        Target("similar_json_uncached", f"`/api/images/<id>/similar/` (any of {images:,})", "uncached", 0.25,
               "/api/images/{n}/similar/", count=images, flush=True),
        Target("gallery_uncached", f"gallery, any of its {pages:,} pages", "uncached", 0.4, "/?page={n}",
               count=pages, flush=True),
    ]
    return [row for row in rows if row.status != 304 or etag]


# --- gunicorn, Redis, the cores ----------------------------------------------------------------


def gunicorn_production(broker_url: str, **extra: str) -> tuple[subprocess.Popen, int]:
    """gunicorn with the site's own configuration (imagerec/gunicorn.py), production settings, the
    broker's Redis (and the cache in it, as the settings place it by default). ``extra``: more
    environment, GUNICORN_CMD_ARGS for a variant, as a platform would set it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "IMAGEREC_"))}
    environment.update(DJANGO_SETTINGS_MODULE="imagerec.settings.production", SECRET_KEY="bench-" + "x" * 40,
                       DEBUG="false", ALLOWED_HOSTS=HOST, DATABASE_URL=os.environ["DATABASE_URL"],
                       CELERY_BROKER_URL=broker_url, METRICS_PUBLIC="true",
                       STATIC_ROOT=str(common.DATA_DIR / "static"), **extra)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=common.ROOT,
                   env=environment, check=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--config", "python:imagerec.gunicorn",
         "imagerec.wsgi"],
        cwd=common.ROOT, env=environment, stdout=subprocess.DEVNULL,  # the access log, as a platform would take it
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            fetch(port, "/")
            return process, port
        except OSError as error:  # HTTPError included: an error page means a broken set-up
            if process.poll() is not None or time.monotonic() > deadline or hasattr(error, "code"):
                process.kill()
                raise RuntimeError(f"gunicorn did not serve the site: {error}") from None
            time.sleep(0.3)


def fetch(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={**HEADERS, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        if error.code != 304:
            raise
        return error.code, dict(error.headers), b""


def cache_flush(broker_url: str) -> None:
    """Every cached page and recommendation list dropped (what a bumped generation amounts to)."""
    import redis

    from imagerec.settings.base import redis_cache_location

    redis.Redis.from_url(redis_cache_location(broker_url)).flushdb()


def static_path() -> str:
    """The site's stylesheet under its hashed name, as a page links to it."""
    manifest = json.loads((common.DATA_DIR / "static" / "staticfiles.json").read_text())
    return "/static/" + manifest["paths"]["css/site.css"]


PAGE_CACHE_SAMPLE = re.compile(r"^(\w*page_?cache\w*?)(?:_total)?(\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE)


def page_cache_counts(port: int) -> dict:
    """The page cache's counters summed over every worker process (``/metrics``): {name{labels}: n}."""
    _, _, body = fetch(port, "/metrics")
    counts: dict[str, float] = {}
    for name, labels, value in PAGE_CACHE_SAMPLE.findall(body.decode()):
        if name.endswith(("_created", "_bucket", "_sum", "_count")):
            continue
        key = name + (labels or "")
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


def hits_and_misses(before: dict, after: dict) -> dict | None:
    """Hits and misses between two readings of ``page_cache_counts``, by the words in the names."""
    if not after:
        return None
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    # A 304 answered from the cache is a hit too.
    hits = sum(v for k, v in delta.items() if re.search(r"hit|not_modified", k))
    misses = sum(v for k, v in delta.items() if re.search(r"miss", k))
    return {"hits": int(hits), "misses": int(misses),
            "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None}


def cpu_seconds_by_part(server_pid: int) -> dict:
    """CPU seconds spent so far by gunicorn (master and workers), the bench's PostgreSQL and
    Redis (each process tree), and this script's children (wrk): what each request costs the
    cores whatever else the machine is doing."""
    import resource

    from devtools import services

    postmaster = int((common.DATA_DIR / "postgres" / "postmaster.pid").read_text().split()[0])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    tree = common.tree_cpu_seconds
    return {"gunicorn": tree(server_pid), "postgres": tree(postmaster),
            "redis": tree(services._redis_pid(common.DATA_DIR) or 0),
            "wrk": children.ru_utime + children.ru_stime}


def wrk(port: int, target: Target, connections: int, seconds: float, script: str) -> dict:
    environment = {**os.environ, "BENCH_PATH": target.path, "BENCH_FIRST": str(target.first),
                   "BENCH_COUNT": str(target.count), "BENCH_STATUS": str(target.status),
                   "BENCH_IF_NONE_MATCH": target.if_none_match}
    output = subprocess.run(
        ["wrk", "--threads", str(min(2, connections)), "--connections", str(connections), "--duration",
         f"{int(seconds)}s", "--timeout", "10s", "--script", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, env=environment, timeout=seconds + 60, check=True,
    ).stdout
    raw = json.loads(next(line for line in output.splitlines() if line.startswith("BENCH_JSON ")).split(" ", 1)[1])
    return {"rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            **{f"p{q}_ms": round(raw[f"p{q}_us"] / 1000, 2) for q in (50, 95, 99)},
            "requests": raw["requests"], "errors": raw["errors"], "unexpected_status": raw["unexpected_status"]}


def measure(server_pid: int, port: int, target: Target, connections: int, seconds: float, script: str) -> dict:
    """wrk's figures, the CPU milliseconds per request of each part, the page cache's hits and the
    machine's load."""
    counts_before, before = page_cache_counts(port), cpu_seconds_by_part(server_pid)
    row = wrk(port, target, connections, seconds, script)
    after, counts_after = cpu_seconds_by_part(server_pid), page_cache_counts(port)
    row["cpu_ms_per_request"] = {part: round(1000 * (after[part] - before[part]) / max(1, row["requests"]), 3)
                                 for part in after}
    row["page_cache"] = hits_and_misses(counts_before, counts_after)
    row["load_average"] = round(os.getloadavg()[0], 1)
    return row


# --- One configuration, round after round --------------------------------------------------------


def run_configuration(build_rows, *, broker_url: str, rounds: int, connections: int, seconds: float,
                      floor_seconds: float, gunicorn_arguments: str = "") -> dict:
    """``build_rows(port)``: the rows, once the server answers (a page's ETag is its answer)."""
    import psutil

    server, port = gunicorn_production(broker_url, **variant_environment(gunicorn_arguments))
    result = {"gunicorn_arguments": gunicorn_arguments, "rounds": []}
    try:
        result["workers"] = len(psutil.Process(server.pid).children())
        rows = build_rows(port)
        result["targets"] = [row.describe() for row in rows]
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(WRK_SCRIPT)
            script.flush()
            for target in rows:  # every worker's connections, imports and caches warm
                wrk(port, target, connections, 1, script.name)
            for number in range(rounds):
                # /healthz before every row and after the last: each row's floor is the mean of the
                # two around it, seconds away, so a change in the machine's other load moves both.
                measured, floors = {}, []
                for target in [*rows[1:], None]:
                    if target and target.flush:
                        cache_flush(broker_url)
                    if target and target.warm:
                        for url in target.urls():
                            fetch(port, url)
                    floors.append(measure(server.pid, port, rows[0], connections, floor_seconds, script.name))
                    if target is None:
                        break
                    measured[target.name] = measure(server.pid, port, target, connections, seconds, script.name)
                for name, row, before, after in zip(measured, measured.values(), floors, floors[1:]):
                    row["floor_rps"] = round((before["rps"] + after["rps"]) / 2, 1)
                    row["ratio"] = round(row["rps"] / row["floor_rps"], 3)
                    log(f"  [{gunicorn_arguments or 'site config'}] round {number + 1} {name}: {row['rps']} req/s "
                        f"(÷ /healthz {row['ratio']}), p95 {row['p95_ms']} ms, CPU ms/request "
                        f"{row['cpu_ms_per_request']}, page cache {row['page_cache']}, "
                        f"wrong status {row['unexpected_status']}, load {row['load_average']}")
                healthz = {key: statistics.median(f[key] for f in floors)
                           for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "load_average")}
                healthz.update(ratio=1.0, floors=[f["rps"] for f in floors], requests=sum(f["requests"] for f in floors),
                               errors=sum(f["errors"] for f in floors), page_cache=None,
                               unexpected_status=sum(f["unexpected_status"] for f in floors),
                               cpu_ms_per_request={part: round(statistics.median(f["cpu_ms_per_request"][part]
                                                                                 for f in floors), 3)
                                                   for part in PARTS})
                measured[rows[0].name] = healthz
                result["rounds"].append(measured)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["summary"] = summarise(result["rounds"], [row.name for row in rows])
    return result


def summarise(rounds: list[dict], names: list[str]) -> dict:
    """Each row's median over the rounds: req/s, p95, the ratio to the floor of its own round,
    CPU per request by part. ``names[0]``: the floor's row."""
    summary = {}
    for name in names:
        measured = [r[name] for r in rounds]
        cpu = {part: [m["cpu_ms_per_request"][part] for m in measured if m["cpu_ms_per_request"][part] is not None]
               for part in PARTS}
        caches = [m["page_cache"] for m in measured if m.get("page_cache")]
        hits, misses = sum(c["hits"] for c in caches), sum(c["misses"] for c in caches)
        summary[name] = {
            "rps": round(statistics.median(m["rps"] for m in measured), 1),
            "p95_ms": round(statistics.median(m["p95_ms"] for m in measured), 2),
            "p99_ms": round(statistics.median(m["p99_ms"] for m in measured), 2),
            "ratio": round(statistics.median(m["ratio"] for m in measured), 3),
            # The same comparison by CPU per request, all parts: what the ratio comes to on cores
            # that serve nothing else.
            "cpu_ratio": round(statistics.median(
                sum(r[names[0]]["cpu_ms_per_request"].values()) / sum(r[name]["cpu_ms_per_request"].values())
                for r in rounds), 3),
            "cpu_ms_per_request": {part: round(statistics.median(values), 3) if values else None
                                   for part, values in cpu.items()},
            "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
            "errors": sum(m["errors"] + m["unexpected_status"] for m in measured),
            "load_average": max(m["load_average"] for m in measured),
        }
    return summary


def run(images: int, *, broker_url: str, tag_slug: str, tag_images: int, rounds: int = 2, connections: int = 4,
        seconds: float = 8, floor_seconds: float = 4, gunicorn_arguments: str = "") -> dict:
    """One gunicorn configuration (the site's, or GUNICORN_CMD_ARGS on top of it) through the
    interleaved rounds."""
    if shutil.which("wrk") is None:
        raise SystemExit("The page benchmark needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk).")
    connection = common.connect()
    with connection.cursor() as cursor:
        machine = common.machine_description(cursor)
    connection.close()

    def build_rows(port: int) -> list[Target]:
        _, headers, _ = fetch(port, f"/images/{images // 2}/")
        return targets(images, tag_slug=tag_slug, tag_images=tag_images, static_path=static_path(),
                       etag=headers.get("ETag", ""))

    log(f"pages at {images:,} images, {gunicorn_arguments or 'the site configuration'}: {rounds} rounds")
    configuration = run_configuration(build_rows, broker_url=broker_url, rounds=rounds, connections=connections,
                                      seconds=seconds, floor_seconds=floor_seconds,
                                      gunicorn_arguments=gunicorn_arguments)
    return {"images": images, "rounds": rounds, "connections": connections, "seconds": seconds,
            "floor_seconds": floor_seconds, "machine": machine, "configurations": {gunicorn_arguments: configuration}}


# --- The report: the "Pages against the floor" section of docs/benchmarks.md ---------------------

PLOT_FILE = common.DOCS_DIR / "img" / "pages-ratios.png"


def met(target: dict, row: dict) -> str:
    if target["goal"] is None:
        return "floor"
    ok = row["ratio"] >= target["goal"] and row["p95_ms"] <= P95_GOAL_MS and row["errors"] == 0
    return "met" if ok else "**not met**"


def variant_environment(variant: str) -> dict[str, str]:
    """A variant's environment: ``NAME=value`` words are settings (``CLICKS_RECORDING=false``),
    the rest gunicorn's arguments (GUNICORN_CMD_ARGS)."""
    words = variant.split()
    settings = dict(word.split("=", 1) for word in words if re.match(r"[A-Z][A-Z0-9_]*=", word))
    arguments = " ".join(word for word in words if not re.match(r"[A-Z][A-Z0-9_]*=", word))
    return {**settings, **({"GUNICORN_CMD_ARGS": arguments} if arguments else {})}


def configuration_name(arguments: str, configuration: dict) -> str:
    return f"`{arguments}`" if arguments else f"the site's ({configuration['workers']} sync workers)"


def cpu_cells(row: dict) -> list:
    cpu = row["cpu_ms_per_request"]
    total = sum(value for value in cpu.values() if value is not None)
    return [" / ".join("—" if cpu[part] is None else f"{cpu[part]:.2f}" for part in PARTS), f"{total:.2f}"]


def report(result: dict, runs: list[dict]) -> None:
    for configuration in result["configurations"].values():  # from the rounds, as this version summarises
        configuration["summary"] = summarise(configuration["rounds"], [t["name"] for t in configuration["targets"]])
    site = result["configurations"][""]
    by_name = {target["name"]: target for target in site["targets"]}
    rows = []
    for name, target in by_name.items():
        row = site["summary"][name]
        goal = "—" if target["goal"] is None else f"≥ {target['goal']}, p95 ≤ {P95_GOAL_MS} ms"
        rows.append([target["group"], target["label"], goal, f"{row['rps']:,.0f}", f"{row['ratio']:.2f}",
                     f"{row['p95_ms']:.1f}", f"{row['p99_ms']:.0f}", met(target, row), *cpu_cells(row),
                     f"{row['cpu_ratio']:.2f}",
                     "" if row["hit_rate"] is None else f"{100 * row['hit_rate']:.0f} %", row["errors"]])
    values = {
        "pages.table": common.table(
            ["kind", "page", "goal (÷ `/healthz`)", "req/s", "÷ `/healthz`", "p95 ms", "p99 ms", "", "CPU ms per request: "
             + " / ".join(PARTS), "CPU ms per request, all parts", "÷ `/healthz` by CPU per request",
             "page cache hits", "errors"], rows, align="lllrrrrllrrrr"),
        "pages.images": f"{result['images']:,}", "pages.rounds": str(result["rounds"]),
        "pages.seconds": f"{result['seconds']:.0f}", "pages.connections": str(result["connections"]),
        "pages.workers": str(site["workers"]), "pages.floor_seconds": f"{result['floor_seconds']:.0f}",
        "pages.load": f"{min(r['load_average'] for r in site['summary'].values()):.1f}–"
                      f"{max(r['load_average'] for r in site['summary'].values()):.1f}",
        "pages.runs": "; ".join(f"`{run['command']}` ({run['started']})" for run in runs),
    }
    machine = result["machine"]
    values["pages.machine"] = (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; {machine['os']}; "
        f"PostgreSQL {machine['postgresql']} with pgvector {machine['pgvector']}; Python {machine['python']}")
    configurations = list(result["configurations"].items())
    if len(configurations) > 1:
        headers = ["page"] + [f"{configuration_name(a, c)}: ÷ `/healthz` (req/s, p95 / p99 ms)"
                              for a, c in configurations]
        variant_rows = []
        for name, target in by_name.items():
            variant_rows.append([target["label"]] + [
                f"{c['summary'][name]['ratio']:.2f} ({c['summary'][name]['rps']:,.0f}, "
                f"{c['summary'][name]['p95_ms']:.0f} / {c['summary'][name].get('p99_ms', 0):.0f})"
                if name in c["summary"] else "" for _, c in configurations])
        variant_rows.append(["CPU ms per request at `/healthz`, all parts"] + [
            cpu_cells(c["summary"]["healthz"])[1] for _, c in configurations])
        values["pages.variants"] = common.table(headers, variant_rows)
    def share(rate):
        return "—" if rate is None else f"{100 * rate:.0f} %"

    for key in ("ingest", "ingest_bounded"):
        ingest = result.get(key)
        if not ingest:
            continue
        ingest_rows = [[by_name[name]["label"], share(idle["hit_rate"]), share(during["hit_rate"]),
                        f"{during['hits']:,} / {during['misses']:,}", f"{idle['rps']:,.0f} → {during['rps']:,.0f}",
                        f"{idle['p95_ms']} → {during['p95_ms']}"]
                       for name, idle, during in ((n, ingest["idle"][n], ingest["ingest"][n]) for n in ingest["idle"])]
        values[f"pages.{key}"] = common.table(
            ["page (cached set)", "hit rate, worker idle", "hit rate during the ingest", "hits / misses during",
             "req/s, idle → ingest", "p95 ms, idle → ingest"], ingest_rows)
        if key == "ingest":  # the same windows for both
            values["pages.ingest_window"] = f"{ingest['window_seconds']:.0f}"
        values[f"pages.{key}_stale"] = f"{ingest.get('stale_seconds', 0):g}"
        values[f"pages.{key}_summary"] = (f"{ingest['ready']:,} of {ingest['uploads']:,} images uploaded and embedded "
                                          f"in {ingest['ingest_seconds']:.0f} s")
    plot(result)
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configurations = list(result["configurations"].items())
    names = [t["name"] for t in configurations[0][1]["targets"]]
    labels = [t["label"].replace("`", "") for t in configurations[0][1]["targets"]]
    goals = [t["goal"] for t in configurations[0][1]["targets"]]
    height = 0.8 / len(configurations)
    figure, axis = plt.subplots(figsize=(10, 0.55 * len(names) + 1.5))
    for index, (arguments, configuration) in enumerate(configurations):
        ratios = [configuration["summary"].get(name, {}).get("ratio", 0) for name in names]
        axis.barh([i + index * height for i in range(len(names))], ratios, height=height,
                  label=configuration_name(arguments, configuration).replace("`", ""))
    for i, goal in enumerate(goals):
        if goal is not None:
            axis.plot([goal, goal], [i - 0.1, i + 0.8 - 0.1], color="red", linewidth=2)
    axis.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], labels, fontsize=8)
    axis.invert_yaxis()
    axis.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="req/s ÷ /healthz's in the same round (red: the goal)",
             title=f"Pages at {result['images']:,} images against the stack's floor "
                   f"({result['connections']} connections, median of {result['rounds']} rounds)")
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(PLOT_FILE, dpi=110)
    plt.close(figure)


# --- Hit rates while a worker embeds new images ------------------------------------------------------


def photos_make(count: int, first_seed: int) -> list[bytes]:
    """Small distinct JPEGs: the worker's work per image is not what this measures, its
    invalidations are."""
    import io

    from imaging import synthetic_photo

    photos = []
    for index in range(count):
        buffer = io.BytesIO()
        synthetic_photo(first_seed + index, (640, 480)).save(buffer, "JPEG", quality=85)
        photos.append(buffer.getvalue())
    return photos


def uploads_run(photos: list[bytes], image_ids: list[int]) -> None:
    """image_create for each photo, one after another, as the upload form calls it."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection, transaction

    from gallery.services import image_create

    try:
        for index, data in enumerate(photos):
            with transaction.atomic():
                image = image_create(upload=SimpleUploadedFile(f"ingest-{index}.jpg", data, content_type="image/jpeg"),
                                     caption=f"Ingested {index}")
            image_ids.append(image.pk)
    finally:
        connection.close()


def ingest_hit_rates(images: int, *, broker_url: str, tag_slug: str, tag_images: int, uploads: int = 1000,
                     connections: int = 4, window_seconds: float = 3, stale_seconds: float = 0) -> dict:
    """The cached pages driven in turn, in short windows, first with the worker idle, then while
    ``uploads`` new images are uploaded and a worker as the Procfile runs it (embeddings,
    renditions, default) embeds them: the page cache's hit rate of each, from its own counters.
    ``stale_seconds``: PAGE_CACHE_INGEST_STALE_SECONDS for the site and the worker."""
    import threading

    from django.test import override_settings

    from devtools.workers import WorkerProcess
    from gallery.models import Image

    photos = photos_make(uploads, first_seed=int(time.time()))
    stale = {"PAGE_CACHE_INGEST_STALE_SECONDS": str(stale_seconds)}
    server, port = gunicorn_production(broker_url, **stale)
    worker = WorkerProcess({**os.environ, **stale}, queues="embeddings,renditions,default")
    # The uploads made here (image_create) follow the same rule.
    bound = override_settings(PAGE_CACHE_INGEST_STALE_SECONDS=stale_seconds)
    bound.enable()
    result = {"uploads": uploads, "window_seconds": window_seconds, "connections": connections,
              "stale_seconds": stale_seconds}
    try:
        worker.start(common.DATA_DIR / "workers")
        rows = [row for row in targets(images, tag_slug=tag_slug, tag_images=tag_images, static_path="/healthz",
                                       etag="") if row.group == "cached"]
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(WRK_SCRIPT)
            script.flush()

            def windows(until) -> dict:
                by_page: dict[str, list] = {row.name: [] for row in rows}
                while True:
                    for row in rows:
                        by_page[row.name].append(measure(server.pid, port, row, connections, window_seconds,
                                                         script.name))
                    if until():
                        return {name: window_summary(measured) for name, measured in by_page.items()}

            for row in rows:
                for url in row.urls():
                    fetch(port, url)
            result["idle"] = windows(lambda: True)
            log(f"  page cache, worker idle: {result['idle']}")
            image_ids: list[int] = []
            uploader = threading.Thread(target=uploads_run, args=(photos, image_ids), daemon=True)
            started = time.monotonic()
            uploader.start()

            def ingested() -> bool:
                return (not uploader.is_alive()
                        and Image.objects.filter(pk__in=image_ids).ready().count() == len(image_ids))

            result["ingest"] = windows(ingested)
            result["ingest_seconds"] = round(time.monotonic() - started, 1)
            result["ready"] = Image.objects.filter(pk__in=image_ids).ready().count()
            log(f"  page cache, {result['ready']} images ingested in {result['ingest_seconds']} s: {result['ingest']}")
    finally:
        bound.disable()
        worker.stop()
        # The collection back to its size, for what is measured next.
        Image.objects.filter(pk__gt=images).delete()
        server.terminate()
        server.wait(timeout=30)
    return result


def window_summary(measured: list[dict]) -> dict:
    hits = sum(m["page_cache"]["hits"] for m in measured if m["page_cache"])
    misses = sum(m["page_cache"]["misses"] for m in measured if m["page_cache"])
    return {"windows": len(measured), "hits": hits, "misses": misses,
            "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
            "rps": round(statistics.median(m["rps"] for m in measured), 1),
            "p95_ms": round(statistics.median(m["p95_ms"] for m in measured), 2)}
