"""Lists after churn: recall@10 and short lists as a tenth of the collection is deleted, then
VACUUM, then the HNSW index rebuilt with REINDEX CONCURRENTLY.

    .venv/bin/python bench/churn.py                          # 100,000 images: VACUUM, then REINDEX
    .venv/bin/python bench/churn.py --order reindex-first    # the other way round, on a fresh load
    .venv/bin/python bench/churn.py --images 10000           # a quick look
    .venv/bin/python bench/churn.py --report-only

The site's tables are loaded as nn.py loads them (binary COPY, the HNSW index the migrations
define), with a tag on 1 % of the images as tags.py gives it. At each stage the same query
images (survivors of the deletion) ask for their 10 nearest with the SQL of
``similarity.selectors.neighbours_queryset``, plain and within the tag, over a connection with
the site's options; the truth is exact search in numpy over the images still there. The
deletion goes through the ORM in batches of 1,000, as the admin's delete action makes them,
signals and the recommendation cache's invalidation included.

The run deletes rows, so it keeps a cluster of its own (``.devdata/bench-churn``, or
BENCH_DATA_DIR) and reloads the tables on the next run. Results accumulate in
``bench/out/churn.json``; the latest run of each order fills the ``churn.*`` regions of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import common
import nn
import tags
from common import log

RESULTS = "churn.json"
K = nn.K
RECALL = 0.95
DELETED_SHARE = 0.10
DELETE_BATCH = 1000
STAGE_NAMES = {"loaded": "as loaded", "deleted": "10 % deleted", "vacuumed": "VACUUM",
               "reindexed": "REINDEX CONCURRENTLY"}
# The maintenance steps after the deletion, in the order and in the one pgvector's
# README advises ("Vacuuming can take a while for HNSW indexes. Speed it up by reindexing first").
ORDERS = {"vacuum-first": ("vacuumed", "reindexed"), "reindex-first": ("reindexed", "vacuumed")}
ORDER_NAMES = {"vacuum-first": "VACUUM, then REINDEX", "reindex-first": "REINDEX, then VACUUM"}


def exact_within(vectors: np.ndarray, query_ids: list[int], allowed: np.ndarray) -> list[list[int]]:
    """nn.exact_neighbours among the ``allowed`` images only (a boolean per image id - 1).

    The others' vectors are negated: the vectors are non-negative, so they score below every
    allowed image and never reach a top 10 while ten allowed images remain.
    """
    masked = np.where(allowed[:, None], vectors, -vectors)
    truth = nn.exact_neighbours(masked, query_ids)
    assert all(allowed[np.array(t) - 1].all() for t in truth), "fewer than k allowed images"
    return truth


def dead_rows(cursor) -> dict:
    """Rows deleted and not yet vacuumed, as PostgreSQL's statistics count them (the writers'
    connections are closed first, which sends their counts)."""
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute("SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", [nn.SITE_TABLE])
    live, dead = cursor.fetchone()
    cursor.execute("SELECT pg_relation_size(%s)", [nn.site_schema()["index"]])
    return {"live_rows": live, "dead_rows": dead, "index_mb": round(cursor.fetchone()[0] / 2**20, 1)}


def resorted(cursor, statements: list[tuple[str, tuple]]) -> tuple[list[list[int]], list[float]]:
    """Each statement's rows sorted by distance (the selector's fifth column), the 10 nearest kept,
    and the seconds each took: what the page would get by asking for 20 and sorting them itself."""
    found, seconds = [], []
    for sql, params in statements:
        start = time.perf_counter()
        cursor.execute(sql, params)
        rows = sorted(cursor.fetchall(), key=lambda row: row[4])[:K]
        seconds.append(time.perf_counter() - start)
        found.append([row[1] for row in rows])
    return found, seconds


def out_of_order(cursor, statements: list[tuple[str, tuple]]) -> int:
    """How many lists do not come nearest first (distance is the selector's fifth column)."""
    count = 0
    for sql, params in statements:
        cursor.execute(sql, params)
        distances = [row[4] for row in cursor.fetchall()]
        count += distances != sorted(distances)
    return count


def lists_measure(connection, plain: tuple, tagged: tuple) -> dict:
    """Recall@10, short lists and latency of the plain and the tagged lists; and of the tagged
    lists asked for 20 long and sorted by distance here (whether the relaxed order costs recall)."""
    (plain_sql, plain_params, plain_truth), (tag_statements, wide_statements, tag_truth) = plain, tagged
    latencies, found = nn.run_queries(connection, plain_sql, plain_params)
    with connection.cursor() as cursor:
        tag_found, tag_seconds = tags.run_set(cursor, tag_statements, [])
        wide_found, wide_seconds = resorted(cursor, wide_statements)
        measured = {
            "plain": {"recall": nn.recall_at_k(found, plain_truth), "short_lists": sum(len(f) < K for f in found),
                      **common.summary_ms(latencies)},
            "tagged": {"recall": nn.recall_at_k(tag_found, tag_truth),
                       "short_lists": sum(len(f) < K for f in tag_found), **common.summary_ms(tag_seconds),
                       "plan": tags.plan(cursor, tag_statements),
                       "out_of_order": out_of_order(cursor, tag_statements)},
            "tagged_resorted": {"recall": nn.recall_at_k(wide_found, tag_truth),
                                "short_lists": sum(len(f) < K for f in wide_found), **common.summary_ms(wide_seconds)},
            **dead_rows(cursor),
        }
    log(f"  plain recall@10 {measured['plain']['recall']} ({measured['plain']['short_lists']} short), "
        f"tagged {measured['tagged']['recall']} ({measured['tagged']['short_lists']} short, "
        f"{measured['tagged']['out_of_order']} out of order), 20 sorted {measured['tagged_resorted']['recall']}; "
        f"{measured['dead_rows']:,} dead rows")
    return measured


def images_delete(image_ids: list[int]) -> None:
    """Through the ORM, a batch at a time: what the admin's delete action does with a selection."""
    from gallery.models import Image

    for begin in range(0, len(image_ids), DELETE_BATCH):
        Image.objects.filter(pk__in=image_ids[begin : begin + DELETE_BATCH]).delete()


def vacuum(connection, n: int, result: dict) -> float:
    log("VACUUM")
    with connection.cursor() as cursor:
        begin = time.perf_counter()
        cursor.execute(f"VACUUM {nn.SITE_TABLE}")
        return time.perf_counter() - begin


def reindex(connection, n: int, result: dict) -> float:
    # An operator sizes maintenance_work_mem to hold the graph, as the bench's builds do: below
    # that pgvector builds on disk, many times slower (docs/scale.md).
    memory = result["reindex_maintenance_work_mem"] = f"{max(512, n * 5000 // 2**20)}MB"
    index = result["site"]["index"]
    log(f"REINDEX INDEX CONCURRENTLY (maintenance_work_mem {memory})")
    with connection.cursor() as cursor:
        cursor.execute(f"SET maintenance_work_mem = '{memory}'")
        begin = time.perf_counter()
        cursor.execute(f"REINDEX INDEX CONCURRENTLY {index}")
        seconds = time.perf_counter() - begin
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [index])
        result["reindex_valid"] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_prewarm(%s)", [index])
    return seconds


def run(n: int, *, plain_queries: int, tag_queries: int, tag_fraction: float, order: tuple[str, ...]) -> dict:
    """Every stage measured: as loaded, after the deletion, then the maintenance steps in ``order``."""
    from django.db import connection as django_connection

    from gallery.models import Tag
    from similarity.selectors import neighbours_queryset
    from similarity.weights import model_identity

    identity = model_identity()
    start = time.perf_counter()
    nn.site_table_prepare(n)
    result = {"n": n, "k": K, "site": nn.site_schema(), "order": list(order),
              "prepare_s": round(time.perf_counter() - start, 1)}
    log(f"{n:,} images loaded in {result['prepare_s']} s")
    tag_id = tags.tag_prepare(n, tag_fraction)
    vectors = common.EmbeddingDistribution().sample(n)
    rng = np.random.default_rng(common.SEED + 18)
    doomed = np.sort(rng.choice(n, int(n * DELETED_SHARE), replace=False) + 1)
    alive = np.ones(n, dtype=bool)
    alive[doomed - 1] = False
    tag = Tag.objects.get(pk=tag_id)
    tagged = np.zeros(n, dtype=bool)
    tagged[np.array(tag.images.values_list("pk", flat=True)) - 1] = True
    # The same query images throughout, all of them survivors.
    survivors, tagged_survivors = np.flatnonzero(alive) + 1, np.flatnonzero(alive & tagged) + 1
    plain_ids = sorted(rng.choice(survivors, min(plain_queries, len(survivors)), replace=False).tolist())
    tag_ids = sorted(rng.choice(tagged_survivors, min(tag_queries, len(tagged_survivors)), replace=False).tolist())
    sql, marks = nn.neighbour_sql(nn.SITE_TABLE)
    plain_params = nn.query_params(plain_ids, identity, marks)
    tag_statements = tags.statements(tag_ids, tag_id, identity)
    wide_statements = [neighbours_queryset(image_id=image_id, k=2 * K, identity=identity, tag=tag)
                       .query.sql_with_params() for image_id in tag_ids]
    result.update(deleted=len(doomed), plain_queries=len(plain_ids), tag_queries=len(tag_ids),
                  tagged=int(tagged.sum()), tagged_after=int((tagged & alive).sum()))

    everyone = np.ones(n, dtype=bool)
    before = ((sql, plain_params, exact_within(vectors, plain_ids, everyone)),
              (tag_statements, wide_statements, exact_within(vectors, tag_ids, tagged)))
    after = ((sql, plain_params, exact_within(vectors, plain_ids, alive)),
             (tag_statements, wide_statements, exact_within(vectors, tag_ids, tagged & alive)))
    # How much of the plain lists the deletion takes away: the share of their true neighbours deleted.
    result["neighbours_deleted"] = round(float(np.mean(~alive[np.array(before[0][2]) - 1])), 4)

    connection = common.connect()
    with connection.cursor() as cursor:
        result["machine"] = common.machine_description(cursor)
        cursor.execute("SHOW maintenance_work_mem")
        result["default_maintenance_work_mem"] = cursor.fetchone()[0]
    stages = result["stages"] = {}
    log("as loaded")
    stages["loaded"] = lists_measure(connection, *before)

    log(f"deleting {len(doomed):,} images through the ORM, {DELETE_BATCH:,} at a time")
    begin = time.perf_counter()
    images_delete(doomed.tolist())
    seconds = time.perf_counter() - begin
    django_connection.close()  # its statistics (the dead rows) go to the server as it ends
    time.sleep(1)
    stages["deleted"] = {"step_s": round(seconds, 1), **lists_measure(connection, *after)}

    for step in order:
        seconds = (vacuum if step == "vacuumed" else reindex)(connection, n, result)
        stages[step] = {"step_s": round(seconds, 1), **lists_measure(connection, *after)}
    connection.close()
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def report(results: dict) -> None:
    runs = results.get("by_order", {})
    main = runs.get("vacuum-first")
    if not main:
        return
    rows = []
    for order, run in runs.items():
        for key in ("loaded", "deleted", *run["order"]):
            stage = run["stages"][key]
            plain, tagged = stage["plain"], stage["tagged"]
            rows.append([ORDER_NAMES[order], STAGE_NAMES[key], stage.get("step_s", ""), plain["recall"],
                         plain["short_lists"], plain["p50_ms"], tagged["recall"], tagged["short_lists"],
                         tagged.get("out_of_order", ""), tagged["p50_ms"], stage.get("tagged_resorted", {}).get("recall", ""),
                         stage.get("tagged_resorted", {}).get("p50_ms", ""), f"{stage['live_rows']:,}",
                         f"{stage['dead_rows']:,}", stage["index_mb"]])
    stages = [stage for run in runs.values() for stage in run["stages"].values()]
    worst = min(min(s["plain"]["recall"], s["tagged"]["recall"]) for s in stages)
    short = sum(s["plain"]["short_lists"] + s["tagged"]["short_lists"] for s in stages)
    values = {
        "churn.table": common.table(
            ["order", "stage", "step s", "recall@10", "short lists", "p50 ms", "tag: recall@10", "tag: short lists",
             "tag: out of order", "tag: p50 ms", "tag, 20 sorted: recall@10", "tag, 20 sorted: p50 ms",
             "live rows", "dead rows", "index MB"], rows, align="llrrrrrrrrrrrrr"),
        "churn.tag_plan": "; ".join(sorted({s["tagged"]["plan"] for s in stages})),
        "churn.n": f"{main['n']:,}", "churn.deleted": f"{main['deleted']:,}",
        "churn.tagged": f"{main['tagged']:,}", "churn.tagged_after": f"{main['tagged_after']:,}",
        "churn.plain_queries": str(main["plain_queries"]), "churn.tag_queries": str(main["tag_queries"]),
        "churn.neighbours_deleted": f"{100 * main['neighbours_deleted']:.1f} %",
        "churn.reindex_memory": main["reindex_maintenance_work_mem"],
        "churn.worst_recall": str(worst), "churn.short": str(short),
        "churn.met": "met" if worst >= RECALL and short == 0 else "**not met**",
        "churn.runs": "; ".join(f"`{r['command']}` ({r['started']})" for r in results.get("runs", [])[-2:]),
    }
    for order, run in runs.items():
        for step in ("vacuumed", "reindexed"):
            values[f"churn.{order}.{step}_s"] = str(run["stages"][step]["step_s"])
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--images", type=int, default=100_000)
    add("--plain-queries", type=int, default=200)
    add("--tag-queries", type=int, default=100)
    add("--tag-fraction", type=float, default=0.01, help="share of the images the tag covers")
    add("--order", choices=list(ORDERS), default="vacuum-first", help="the maintenance steps after the deletion")
    add("--keep-server", action="store_true")
    add("--report-only", action="store_true")
    options = parser.parse_args(argv)
    results = common.load(RESULTS, {})
    if not options.report_only:
        # Never the shared .devdata/bench: its tables are reused by the other benchmarks, and this run deletes.
        if not os.environ.get("BENCH_DATA_DIR"):
            common.DATA_DIR = common.ROOT / ".devdata" / "bench-churn"
        results.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%d %H:%M %Z"),
                                               "command": " ".join(["bench/churn.py", *sys.argv[1:]])})
        common.django_setup(common.DATA_DIR, broker=True)
        try:
            common.cluster_configure()
            results.setdefault("by_order", {})[options.order] = run(
                options.images, plain_queries=options.plain_queries, tag_queries=options.tag_queries,
                tag_fraction=options.tag_fraction, order=ORDERS[options.order])
            common.save(RESULTS, results)
        finally:
            if not options.keep_server:
                common.servers_stop(common.DATA_DIR)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
