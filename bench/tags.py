"""Recommendations within a tag at scale: recall@10 and latency of the site's filtered query.

Assumes the bench database holds the site's tables at size n (``nn.site_table_prepare``).
A tag is given to a fraction of the images, drawn uniformly at random (the hard case for a
filtered HNSW scan: a tag that follows the pictures' content would put its members near each
other in the graph). Each query is the SQL of ``similarity.selectors.neighbours_queryset``
with ``tag=``, the queryset the recommendation page evaluates, over a connection with the
site's options (``hnsw.iterative_scan = relaxed_order``, ``hnsw.ef_search``); the truth is
the same SQL with index scans off, which filters then sorts exactly.
"""

from __future__ import annotations

import time

import common
import numpy as np
from common import log

TAG_SLUG = "bench-tag"
K = 10


def tag_prepare(images: int, fraction: float) -> int:
    """The bench tag on ``fraction`` of the images (the same ones on every run); its pk."""
    from django.db import connection

    from gallery.models import Tag

    tag, _ = Tag.objects.get_or_create(slug=TAG_SLUG, defaults={"name": "Bench tag"})
    members = np.sort(np.random.default_rng(common.SEED).choice(images, int(images * fraction), replace=False) + 1)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM gallery_image_tags WHERE tag_id = %s", [tag.pk])
        cursor.execute("INSERT INTO gallery_image_tags (image_id, tag_id) SELECT unnest(%s::bigint[]), %s",
                       [members.tolist(), tag.pk])
        cursor.execute("ANALYZE gallery_image_tags")
    return tag.pk


def statements(query_ids: list[int], tag_id: int, identity: str) -> list[tuple[str, tuple]]:
    from gallery.models import Tag
    from similarity.selectors import neighbours_queryset

    tag = Tag.objects.get(pk=tag_id)
    return [neighbours_queryset(image_id=image_id, k=K, identity=identity, tag=tag).query.sql_with_params()
            for image_id in query_ids]


def run_set(cursor, sql_params: list, settings_sql: list[str]) -> tuple[list[list[int]], list[float]]:
    for statement in settings_sql:
        cursor.execute(statement)
    for sql, params in sql_params[:5]:  # warm-up
        cursor.execute(sql, params)
        cursor.fetchall()
    found, seconds = [], []
    for sql, params in sql_params:
        start = time.perf_counter()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        seconds.append(time.perf_counter() - start)
        found.append([row[1] for row in rows])  # (id, image_id, ...): the selector's column order
    return found, seconds


def plan(cursor, sql_params: list) -> str:
    sql, params = sql_params[0]
    cursor.execute("EXPLAIN " + sql, params)
    lines = [row[0] for row in cursor.fetchall()]
    if any("_hnsw" in line for line in lines):
        return "HNSW index scan, filtered"
    return "tag's rows, then sorted" if any("Sort" in line for line in lines) else " / ".join(lines[:3])


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth)]))


def run(images: int, *, fraction: float = 0.01, queries: int = 100,
        variants: list[tuple[str, list[str]]] | None = None) -> dict:
    from django.conf import settings

    from similarity.weights import model_identity

    tag_id = tag_prepare(images, fraction)
    from gallery.models import Tag

    members = list(Tag.objects.get(pk=tag_id).images.values_list("pk", flat=True))
    rng = np.random.default_rng(common.SEED + 1)
    query_ids = sorted(rng.choice(members, queries, replace=False).tolist())
    sql_params = statements(query_ids, tag_id, model_identity())
    connection = common.connect()
    result = {"images": images, "tagged": len(members), "fraction": fraction, "queries": queries,
              "site_ef_search": settings.HNSW_EF_SEARCH, "runs": []}
    with connection.cursor() as cursor:
        cursor.execute("SELECT '[1]'::vector")  # loads pgvector, whose settings SHOW then knows
        cursor.execute("SHOW hnsw.iterative_scan")
        result["site_iterative_scan"] = cursor.fetchone()[0]
        cursor.execute("SHOW hnsw.max_scan_tuples")
        result["default_max_scan_tuples"] = cursor.fetchone()[0]
        truth, exact_seconds = run_set(cursor, sql_params, ["SET enable_indexscan = off"])
        result["exact"] = {**common.summary_ms(exact_seconds), "plan": plan(cursor, sql_params)}
        log(f"tags: exact filtered search p50 {result['exact']['p50_ms']} ms ({result['exact']['plan']})")
        cursor.execute("RESET enable_indexscan")
        for name, settings_sql in variants or VARIANTS:
            cursor.execute("RESET ALL")  # back to the connection's options (the site's)
            found, seconds = run_set(cursor, sql_params, settings_sql)
            short = sum(len(f) < K for f in found)
            entry = {"name": name, "settings": settings_sql, "recall": round(recall(found, truth), 4),
                     "short_lists": short, "plan": plan(cursor, sql_params), **common.summary_ms(seconds)}
            entry["speedup"] = round(result["exact"]["p50_ms"] / entry["p50_ms"], 1)
            result["runs"].append(entry)
            log(f"  {name}: recall@10 {entry['recall']}, p50 {entry['p50_ms']} ms, "
                f"{short} short lists, {entry['plan']}")
    connection.close()
    return result


# The site's connection (first row), then what pgvector offers for filtered scans.
# https://github.com/pgvector/pgvector#iterative-index-scans
VARIANTS = [
    ("the site's options", []),
    ("ef_search 40", ["SET hnsw.ef_search = 40"]),
    ("ef_search 400", ["SET hnsw.ef_search = 400"]),
    ("ef_search 1000", ["SET hnsw.ef_search = 1000"]),
    ("max_scan_tuples 100000", ["SET hnsw.max_scan_tuples = 100000"]),
    ("ef_search 400, max_scan_tuples 100000", ["SET hnsw.ef_search = 400", "SET hnsw.max_scan_tuples = 100000"]),
    ("strict_order", ["SET hnsw.iterative_scan = strict_order"]),
    ("iterative scan off", ["SET hnsw.iterative_scan = off"]),
]
