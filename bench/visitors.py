"""What visitors meet at 100,000 images: recommendations within a tag.

    .venv/bin/python bench/visitors.py                 # 100k: loads it if needed
    .venv/bin/python bench/visitors.py --report-only

The pages, cached and not, against the stack's floor: ``run_all.py --only pages`` (pages.py).

The bench's PostgreSQL under ``.devdata/bench`` (shared with run_all.py: the site's
tables at --images are reused when they are already loaded). Results accumulate in
``bench/out/visitors.json``; the latest of each part fills the ``visitors.*`` regions of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import common
from common import log

RESULTS = "visitors.json"
TAG_RECALL = 0.95


def measure(options, results: dict) -> None:
    import nn
    import tags

    common.django_setup(common.DATA_DIR)
    try:
        common.cluster_configure()
        start = time.perf_counter()
        nn.site_table_prepare(options.images)
        log(f"site tables at {options.images:,} images ready in {time.perf_counter() - start:.0f} s")
        results["tags"] = tags.run(options.images, fraction=options.tag_fraction, queries=options.tag_queries)
        common.save(RESULTS, results)
    finally:
        if not options.keep_server:
            common.servers_stop(common.DATA_DIR)


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
    values["visitors.runs"] = "; ".join(f"`{run['command']}` ({run['started']})" for run in results.get("runs", []))
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--images", type=int, default=100_000)
    add("--tag-fraction", type=float, default=0.01, help="share of the images the tag covers")
    add("--tag-queries", type=int, default=100)
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
