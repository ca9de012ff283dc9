"""What visitors meet at 100,000 images: recommendations within a tag, and the pages cached and not.

    .venv/bin/python bench/visitors.py                 # tags, then pages (100k: loads it if needed)
    .venv/bin/python bench/visitors.py --only tags
    .venv/bin/python bench/visitors.py --only pages --profile   # py-spy on the gunicorn workers too
    .venv/bin/python bench/visitors.py --report-only

The bench's PostgreSQL and Redis under ``.devdata/bench`` (shared with run_all.py: the site's
tables at --images are reused when they are already loaded). Results accumulate in
``bench/out/visitors.json``; the latest of each part fills the ``visitors.*`` regions of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import common
from common import log

RESULTS = "visitors.json"
PAGE_RPS_UNCACHED, PAGE_RPS_CACHED, PAGE_P95_MS = 300, 800, 50
TAG_RECALL = 0.95
PARTS = ("gunicorn", "postgres", "redis", "wrk")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# Where a request's time goes: each sample counts for the first activity of this list whose
# frame is on its stack. py-spy samples wall time, waits on sockets included.
ACTIVITIES = [
    ("SQL statements (PostgreSQL round trips)", "_execute (django/db/backends/utils.py"),
    ("connection health check (CONN_HEALTH_CHECKS)", "is_usable (django/db/backends/postgresql/base.py"),
    ("Redis (the recommendation cache)", "execute_command (redis/client.py"),
    ("template rendering", "render (django/template/response.py"),
    ("ORM: building and compiling queries", "(django/db/models/"),
    ("sending the response, closing the connection", "(gunicorn/util.py"),
    ("middleware and the rest of Django", "(django/"),
]


def hot_frames(files: list[str]) -> list[tuple[str, float]]:
    """Share of py-spy's samples (raw, collapsed stacks) spent in each activity."""
    shares, total = collections.Counter(), 0
    for path in files:
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            frames = stack.split(";")[::-1]
            activity = next((name for name, marker in ACTIVITIES if any(marker in frame for frame in frames)),
                            "gunicorn's loop, waiting for a request")
            shares[activity] += int(count)
    return [(name, round(100 * count / total, 1)) for name, count in shares.most_common()] if total else []


def measure(options, results: dict) -> None:
    import nn
    import pages
    import tags

    from devtools import services

    common.django_setup(common.DATA_DIR, broker=True)
    try:
        common.cluster_configure()
        start = time.perf_counter()
        nn.site_table_prepare(options.images)
        log(f"site tables at {options.images:,} images ready in {time.perf_counter() - start:.0f} s")
        if options.only in (None, "tags"):
            results["tags"] = tags.run(options.images, fraction=options.tag_fraction, queries=options.tag_queries)
            common.save(RESULTS, results)
        if options.only in (None, "pages"):
            broker_url = services.redis_url(services.redis_start(common.DATA_DIR))
            profile_dir = common.OUT_DIR / "profiles" if options.profile else None
            measured = pages.run_visitors(options.images, broker_url=broker_url,
                                          connection_levels=options.connections, seconds=options.seconds,
                                          workers=options.workers, profile_dir=profile_dir,
                                          gunicorn_arguments=options.gunicorn_args)
            if options.gunicorn_args:  # a variant, reported beside the site's configuration
                results.setdefault("page_variants", {})[options.gunicorn_args] = measured
                common.save(RESULTS, results)
                return
            results["pages"] = measured
            if profile_dir is not None:
                results["pages"]["hot"] = {name: hot_frames(files) for name, files in results["pages"]["profiles"].items()}
            common.save(RESULTS, results)
    finally:
        if not options.keep_server:
            common.servers_stop(common.DATA_DIR)


def best(rows: list[dict]) -> dict:
    passing = [r for r in rows if r["p95_ms"] <= PAGE_P95_MS and r["errors"] == 0]
    return max(passing or rows, key=lambda r: r["rps"]) | {"passing": bool(passing)}


def report(results: dict) -> None:
    values = {}
    tag = results.get("tags")
    if tag:
        rows = [["exact (index scans off)", "", "", tag["exact"]["p50_ms"], tag["exact"]["p95_ms"], "1×",
                 tag["exact"]["plan"]]]
        rows += [[run["name"], run["recall"], run["short_lists"], run["p50_ms"], run["p95_ms"], f"{run['speedup']}×",
                  run["plan"]] for run in tag["runs"]]
        site = tag["runs"][0]
        values.update({
            "visitors.tags_table": common.table(
                ["connection settings", "recall@10", "lists short of 10", "p50 ms", "p95 ms", "speedup", "plan"], rows),
            "visitors.tags_n": f"{tag['images']:,}", "visitors.tags_tagged": f"{tag['tagged']:,}",
            "visitors.tags_queries": str(tag["queries"]),
            "visitors.tags_recall": str(site["recall"]), "visitors.tags_p50": str(site["p50_ms"]),
            "visitors.tags_met": "met" if site["recall"] >= TAG_RECALL else "**not met**",
            "visitors.tags_max_scan": str(tag["default_max_scan_tuples"]),
        })
    page = results.get("pages")
    if page and page.get("profiles"):  # recomputed, so the breakdown can change with saved profiles
        page["hot"] = {name: hot_frames(files) for name, files in page["profiles"].items()}
    if page:
        rows = []
        for name in ("recommendation", "similar_json"):
            for state in ("uncached", "cached"):
                for r in page[name][state]:
                    cpu = r.get("cpu_ms_per_request", {})
                    total = None if None in cpu.values() else sum(cpu.values())
                    rows.append([name, state, r["connections"], r["rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
                                 r["errors"], " / ".join("—" if cpu.get(part) is None else f"{cpu[part]:.1f}" for part in PARTS),
                                 f"{2000 / total:.0f}" if total else "", r.get("load_average", "")])
                chosen = best(page[name][state])
                target = PAGE_RPS_UNCACHED if state == "uncached" else PAGE_RPS_CACHED
                values[f"visitors.best.{name}.{state}"] = (
                    f"{chosen['rps']} req/s, p95 {chosen['p95_ms']} ms ({chosen['connections']} connections)")
                values[f"visitors.met.{name}.{state}"] = (
                    "met" if chosen["passing"] and chosen["rps"] >= target else "**not met**")
        for name in ("recommendation", "similar_json"):
            totals = {state: [sum(r["cpu_ms_per_request"].values()) for r in page[name][state]
                              if None not in r.get("cpu_ms_per_request", {None: None}).values()]
                      for state in ("uncached", "cached")}
            if all(totals.values()):
                cached, uncached = (sum(totals[state]) / len(totals[state]) for state in ("cached", "uncached"))
                values[f"visitors.cached_share.{name}"] = (
                    f"{100 * cached / uncached:.0f} % ({cached:.1f} against {uncached:.1f} ms, the mean over its rows)")
        counts = page["queries_per_page"]
        values.update({
            "visitors.pages_table": common.table(
                ["page", "cache", "connections", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                 "CPU ms per request: " + " / ".join(PARTS), "2 cores ÷ CPU per request, req/s",
                 "machine load (1 min)"], rows),
            "visitors.pages_workers": str(page["workers"]), "visitors.pages_seconds": f"{page['seconds']:.0f}",
            "visitors.pages_cached_images": str(page["cached_images"]),
            "visitors.pages_queries": "; ".join(f"{name}: {c['uncached']} uncached, {c['cached']} cached"
                                                for name, c in counts.items()),
        })
        if page.get("hot"):
            values["visitors.profile"] = "\n".join(
                f"- {name}: " + "; ".join(f"{activity} {share} %" for activity, share in frames)
                for name, frames in page["hot"].items())
    variants = results.get("page_variants", {})
    if variants and page:
        rows = []
        for arguments, variant in [("(the site's configuration)", page), *variants.items()]:
            for name in ("recommendation", "similar_json"):
                for state in ("uncached", "cached"):
                    for r in variant[name][state]:
                        cpu = r.get("cpu_ms_per_request", {})
                        rows.append([f"`{arguments}`" if arguments in variants else arguments, name, state,
                                     r["connections"], r["rps"], r["p95_ms"],
                                     " / ".join("—" if cpu.get(part) is None else f"{cpu[part]:.1f}" for part in PARTS),
                                     r.get("load_average", "")])
        values["visitors.variants"] = common.table(
            ["GUNICORN_CMD_ARGS", "page", "cache", "connections", "req/s", "p95 ms",
             "CPU ms per request: " + " / ".join(PARTS), "machine load (1 min)"], rows)
    values["visitors.runs"] = "; ".join(f"`{run['command']}` ({run['started']})" for run in results.get("runs", []))
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--images", type=int, default=100_000)
    add("--only", choices=["tags", "pages"])
    add("--tag-fraction", type=float, default=0.01, help="share of the images the tag covers")
    add("--tag-queries", type=int, default=100)
    add("--connections", type=ints, default=ints("2,4,8"))
    add("--seconds", type=float, default=8, help="duration of each wrk run")
    add("--workers", type=int, default=None, help="gunicorn workers (default: imagerec/gunicorn.py's)")
    add("--profile", action="store_true", help="py-spy on the gunicorn workers, each page uncached")
    add("--gunicorn-args", default="", help="GUNICORN_CMD_ARGS for a variant of the site's gunicorn "
        "configuration, reported beside it (e.g. \"--worker-class gthread --threads 2\")")
    add("--keep-server", action="store_true")
    add("--report-only", action="store_true")
    options = parser.parse_args(argv)
    results = common.load(RESULTS, {})
    if not options.report_only:
        results.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%d %H:%M %Z"),
                                               "command": " ".join(["bench/visitors.py", *sys.argv[1:]])})
        measure(options, results)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
