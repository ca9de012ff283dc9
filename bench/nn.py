"""Nearest-neighbour search as the site runs it: loading, HNSW builds, recall, latency, throughput.

Storage layouts compared, each in a table of its own with the site's columns: ``vector``
(``vector(512)``, TOASTed: 2,056 bytes is over the 2 kB threshold), ``vector_plain`` (the
same with ``SET STORAGE PLAIN``) and ``halfvec`` (``halfvec(512)``, in the row).

The site's own table is loaded and indexed as its models say (``site_schema``). Every query
is the SQL of ``similarity.selectors.neighbours_queryset``, the queryset the site evaluates:
only the table name is swapped for the other layouts.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

import common
from common import log

LAYOUTS = {
    "vector": {"type": "vector(512)", "opclass": "vector_cosine_ops", "plain": False, "half": False},
    "vector_plain": {"type": "vector(512)", "opclass": "vector_cosine_ops", "plain": True, "half": False},
    "halfvec": {"type": "halfvec(512)", "opclass": "halfvec_cosine_ops", "plain": False, "half": True},
}
SITE_TABLE = "similarity_embedding"
K = 10
# Placeholders given to the selector's queryset, swapped for each query's own values.
IDENTITY_MARK = "bench-identity-placeholder"
IMAGE_MARK = -7_777_777


def site_schema() -> dict:
    """The site's storage and index as its models and settings define them."""
    from django.conf import settings
    from pgvector.django import HnswIndex

    from similarity.models import Embedding

    column_type = Embedding._meta.get_field("vector").db_type(connection=None)
    (index,) = [i for i in Embedding._meta.indexes if isinstance(i, HnswIndex)]
    layout = next(name for name, spec in LAYOUTS.items()
                  if (spec["type"], spec["opclass"], spec["plain"]) == (column_type, index.opclasses[0], False))
    return {"table": SITE_TABLE, "layout": layout, "type": column_type, "opclass": index.opclasses[0],
            "index": index.name, "m": index.m, "ef_construction": index.ef_construction,
            "ef_search": settings.HNSW_EF_SEARCH}


def layout_table(layout: str) -> str:
    return f"bench_embedding_{layout}"


def neighbour_sql(table: str) -> tuple[str, tuple]:
    """The site's nearest-neighbour SQL pointed at ``table``, and its parameters' placeholders."""
    from similarity.selectors import neighbours_queryset

    sql, params = neighbours_queryset(image_id=IMAGE_MARK, k=K, identity=IDENTITY_MARK).query.sql_with_params()
    if set(params) - {IDENTITY_MARK, IMAGE_MARK, K}:
        raise RuntimeError(f"unexpected parameters in the selector's SQL: {params}")
    return sql.replace(f'"{SITE_TABLE}"', f'"{table}"'), params


def query_params(image_ids: list[int], identity: str, marks: tuple) -> list[tuple]:
    swap = {IDENTITY_MARK: identity}
    return [tuple({**swap, IMAGE_MARK: image_id}.get(mark, mark) for mark in marks) for image_id in image_ids]


def run_queries(connection, sql: str, params: list, *, exact: bool = False):
    """Latency of each query (seconds) after a warm-up pass, and the neighbour ids returned."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_indexscan = %s", ["off" if exact else "on"])
        for row in params[:3] if exact else params:
            cursor.execute(sql, row)
            cursor.fetchall()
        latencies, found = [], []
        for row in params:
            start = time.perf_counter()
            cursor.execute(sql, row)
            rows = cursor.fetchall()
            latencies.append(time.perf_counter() - start)
            found.append([r[1] for r in rows])  # image_id
    return latencies, found


def exact_neighbours(vectors: np.ndarray, image_ids: list[int]) -> list[list[int]]:
    """The true k nearest images by cosine, in float32, the query image excluded."""
    truth = []
    for begin in range(0, len(image_ids), 50):
        ids = np.array(image_ids[begin : begin + 50])
        similarities = vectors @ vectors[ids - 1].T
        similarities[ids - 1, np.arange(len(ids))] = -np.inf
        top = np.argpartition(-similarities, K, axis=0)[:K]
        for column in range(len(ids)):
            truth.append([int(i) + 1 for i in top[np.argsort(-similarities[top[:, column], column]), column]])
    return truth


def recall_at_k(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f[:K]) & set(t[:K])) for f, t in zip(found, truth))
    return round(hits / sum(min(K, len(t)) for t in truth), 4)


def _client(sql, params, ef_search, start_at, stop_at, offset, queue):
    connection = common.connect(ef_search=ef_search)
    latencies = []
    with connection.cursor() as cursor:
        for row in params[:20]:
            cursor.execute(sql, row)
            cursor.fetchall()
        while time.time() < start_at:
            time.sleep(0.001)
        index = offset
        while time.time() < stop_at:
            begin = time.perf_counter()
            cursor.execute(sql, params[index % len(params)])
            cursor.fetchall()
            latencies.append(time.perf_counter() - begin)
            index += 1
    connection.close()
    queue.put(latencies)


def run_clients(sql: str, params: list, *, ef_search: int, clients: int, seconds: float) -> dict:
    """Queries per second and latency with ``clients`` processes querying flat out."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 1.0 + 0.2 * clients
    processes = [context.Process(target=_client, args=(sql, params, ef_search, start_at, start_at + seconds,
                                                       i * len(params) // clients, queue)) for i in range(clients)]
    for process in processes:
        process.start()
    latencies = [latency for _ in processes for latency in queue.get()]
    for process in processes:
        process.join()
    return {"clients": clients, "qps": round(len(latencies) / seconds, 1), **common.summary_ms(latencies)}


def index_build(cursor, table: str, layout: str, m: int, ef_construction: int, rows: int) -> dict:
    """An HNSW build with maintenance_work_mem sized to hold the graph (about 4 kB a row at m=16),
    then the index read into shared buffers, as a running site would have it."""
    name = f"{table}_hnsw"
    cursor.execute(f"DROP INDEX IF EXISTS {name}")
    cursor.execute(f"SET maintenance_work_mem = '{max(512, rows * 5000 // 2**20)}MB'")
    start = time.perf_counter()
    cursor.execute(f"CREATE INDEX {name} ON {table} USING hnsw (vector {LAYOUTS[layout]['opclass']}) "
                   f"WITH (m = {m}, ef_construction = {ef_construction})")
    seconds = time.perf_counter() - start
    cursor.execute("RESET maintenance_work_mem")
    cursor.execute("SELECT pg_relation_size(%s), pg_prewarm(%s)", [name, name])
    return {"m": m, "ef_construction": ef_construction, "build_s": round(seconds, 2),
            "index_mb": round(cursor.fetchone()[0] / 2**20, 1)}


def site_table_load(connection, vectors: np.ndarray, identity: str, *, naive: bool) -> dict:
    """similarity_embedding loaded the fast way (binary COPY, then the HNSW build the migrations
    define) and, with ``naive``, first the ORM's way (bulk_create into the indexed table)."""
    from similarity.models import Embedding

    schema = site_schema()
    result = {"rows": len(vectors), **{key: schema[key] for key in ("layout", "type", "m", "ef_construction")}}
    with connection.cursor() as cursor:
        if naive:
            cursor.execute(f"TRUNCATE {SITE_TABLE}")
            start = time.perf_counter()
            for begin in range(0, len(vectors), 1000):
                Embedding.objects.bulk_create([Embedding(image_id=begin + i + 1, model_identity=identity, vector=v)
                                               for i, v in enumerate(vectors[begin : begin + 1000])])
            result["naive_bulk_create_s"] = round(time.perf_counter() - start, 2)
            log(f"  naive bulk_create with the index in place: {result['naive_bulk_create_s']} s")
        cursor.execute(f"TRUNCATE {SITE_TABLE}")
        cursor.execute(f"DROP INDEX IF EXISTS {schema['index']}")
        start = time.perf_counter()
        common.copy_embeddings(cursor, SITE_TABLE, vectors, identity, half=LAYOUTS[schema["layout"]]["half"])
        result["copy_s"] = round(time.perf_counter() - start, 2)
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{SITE_TABLE}', 'id'), %s)", [len(vectors)])
        assert f"{SITE_TABLE}_hnsw" == schema["index"], schema  # the migration's name for it
        build = index_build(cursor, SITE_TABLE, schema["layout"], schema["m"], schema["ef_construction"], len(vectors))
        result["index_s"], result["index_mb"] = build["build_s"], build["index_mb"]
        start = time.perf_counter()
        cursor.execute(f"ANALYZE {SITE_TABLE}")
        result["analyze_s"] = round(time.perf_counter() - start, 2)
    result["copy_total_s"] = round(result["copy_s"] + result["index_s"] + result["analyze_s"], 2)
    log(f"  binary COPY {result['copy_s']} s + HNSW build {result['index_s']} s")
    return result


def site_path_latency(image_ids: list[int], identity: str) -> dict:
    """The selector as a page calls it, through the ORM, and how many SQL statements it sends."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gallery.models import Image
    from similarity.selectors import images_similar_to

    images = list(Image.objects.filter(pk__in=image_ids[:100]))
    for image in images:
        images_similar_to(image=image, k=K, identity=identity)
    with CaptureQueriesContext(connection) as captured:
        assert len(images_similar_to(image=images[0], k=K, identity=identity)) == K
    latencies = []
    for image in images:
        start = time.perf_counter()
        images_similar_to(image=image, k=K, identity=identity)
        latencies.append(time.perf_counter() - start)
    return {**common.summary_ms(latencies), "queries_per_call": len(captured)}


def incremental_insert(identity: str, count: int = 20) -> dict:
    """One new image and its vector stored the site's way (embeddings_store), into the indexed table."""
    from django.db import connection

    from gallery.models import Image
    from similarity.services import embeddings_store

    vectors = common.EmbeddingDistribution(seed=1).sample(count)
    latencies, created = [], []
    for i in range(count):
        start = time.perf_counter()
        image = Image.objects.create(file=f"images/bench/new-{i}.jpg", original_name=f"new-{i}.jpg", format="JPEG",
                                     width=640, height=480, file_size=120000, sha256=f"new-{time.time_ns()}-{i}")
        embeddings_store(vectors_by_image={image.pk: vectors[i]}, identity=identity)
        latencies.append(time.perf_counter() - start)
        created.append(image.pk)
    Image.objects.filter(pk__in=created).delete()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {SITE_TABLE}")
    return common.summary_ms(latencies)


def site_tables_reset(connection, n: int) -> float:
    """Drop the layouts' tables, and make n gallery rows; returns the seconds the rows took."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for layout in LAYOUTS:
            cursor.execute(f"DROP TABLE IF EXISTS {layout_table(layout)}")
        cursor.execute("TRUNCATE gallery_image RESTART IDENTITY CASCADE")
        start = time.perf_counter()
        common.images_insert(cursor, n)
        cursor.execute("ANALYZE gallery_image")
        return round(time.perf_counter() - start, 2)


def site_table_prepare(n: int) -> None:
    """Just the site's tables at size n, loaded the fast way (for the page benchmark alone)."""
    from gallery.models import RENDITION_SPECS
    from similarity.weights import model_identity

    connection = common.connect()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT (SELECT count(*) FROM gallery_image), (SELECT count(*) FROM {SITE_TABLE}),"
                       " to_regclass(%s) IS NOT NULL, (SELECT count(*) FROM gallery_rendition)",
                       [site_schema()["index"]])
        loaded = cursor.fetchone() == (n, n, True, n * len(RENDITION_SPECS))
    if not loaded:
        site_tables_reset(connection, n)
        site_table_load(connection, common.EmbeddingDistribution().sample(n), model_identity(), naive=False)
    connection.close()


def layout_load(connection, layout: str, vectors: np.ndarray, identity: str) -> tuple[str, dict]:
    """A table with the site's columns in ``layout``'s storage, loaded and keyed like the site's."""
    spec, table = LAYOUTS[layout], layout_table(layout)
    entry = {"type": spec["type"], "storage": "plain" if spec["plain"] else "default"}
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (LIKE {SITE_TABLE} INCLUDING DEFAULTS)")
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN vector TYPE {spec['type']}")
        if spec["plain"]:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN vector SET STORAGE PLAIN")
        start = time.perf_counter()
        common.copy_embeddings(cursor, table, vectors, identity, half=spec["half"])
        entry["copy_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
        # The site's unique (image, model) constraint, which the selector's subquery uses.
        cursor.execute(f"CREATE UNIQUE INDEX ON {table} (image_id, model_identity)")
        cursor.execute(f"VACUUM ANALYZE {table}")
        entry["key_and_analyze_s"] = round(time.perf_counter() - start, 2)
        cursor.execute("SELECT pg_relation_size(oid), reltoastrelid FROM pg_class WHERE relname = %s", [table])
        heap, toast = cursor.fetchone()
        cursor.execute("SELECT pg_prewarm(%s::regclass)", [table])
        toast_bytes = 0
        if toast:
            cursor.execute("SELECT pg_relation_size(%s::regclass), pg_prewarm(%s::regclass)", [toast, toast])
            toast_bytes = cursor.fetchone()[0]
    entry.update(heap_mb=round(heap / 2**20, 1), toast_mb=round(toast_bytes / 2**20, 1))
    return table, entry


def run_size(n: int, *, sweep: list[tuple[int, int]], chosen: tuple[int, int], layouts: list[str],
             ef_values: list[int], query_count: int, exact_count: int, seconds: float, naive: bool,
             site_table: bool = True, throughput: bool = True) -> dict:
    """Everything measured at one size. Without ``site_table`` the site's own table stays empty
    (the largest size, to save a second index build): the first layout's load is timed instead."""
    from similarity.weights import model_identity

    identity = model_identity()
    result = {"n": n, "k": K, "identity": identity, "site": site_schema()}
    began = time.perf_counter()
    log(f"{n:,} vectors: generating")
    vectors = common.EmbeddingDistribution().sample(n)
    connection = common.connect()
    result["images_insert_s"] = site_tables_reset(connection, n)
    with connection.cursor() as cursor:
        result["machine"] = common.machine_description(cursor)
    if site_table:
        log(f"{n:,}: loading similarity_embedding")
        result["load"] = site_table_load(connection, vectors, identity, naive=naive)

    image_ids = sorted(int(i) + 1 for i in np.random.default_rng(7).choice(n, min(query_count, n), replace=False))
    truth = exact_neighbours(vectors, image_ids)
    result["layouts"] = {}
    for layout in layouts:
        table, entry = layout_load(connection, layout, vectors, identity)
        result["layouts"][layout] = entry
        sql, marks = neighbour_sql(table)
        params = query_params(image_ids, identity, marks)
        result["queries"], result["exact_queries"] = len(params), min(exact_count, len(params))
        log(f"{n:,} {layout}: exact search ({result['exact_queries']} queries, index disabled)")
        latencies, found = run_queries(connection, sql, params[:exact_count], exact=True)
        # recall: how far the index-disabled search agrees with float32 brute force.
        entry["exact"] = {**common.summary_ms(latencies), "recall": recall_at_k(found, truth)}
        entry["indexes"] = []
        configs = sweep if layout == layouts[0] and sweep else [chosen]
        for m, ef_construction in [*configs, *([chosen] if chosen not in configs else [])]:
            with connection.cursor() as cursor:
                build = index_build(cursor, table, layout, m, ef_construction, rows=n)
            log(f"  HNSW m={m} ef_construction={ef_construction}: {build['build_s']} s, {build['index_mb']} MB")
            build["ef_search"] = []
            for ef_search in ef_values:
                ef_connection = common.connect(ef_search=ef_search)
                latencies, found = run_queries(ef_connection, sql, params)
                ef_connection.close()
                point = {"ef_search": ef_search, "recall": recall_at_k(found, truth), **common.summary_ms(latencies)}
                point["speedup_vs_exact"] = round(entry["exact"]["p50_ms"] / point["p50_ms"], 1)
                if (m, ef_construction) == chosen and throughput:
                    point["throughput"] = [run_clients(sql, params, ef_search=ef_search, clients=clients,
                                                       seconds=seconds) for clients in (1, 2)]
                build["ef_search"].append(point)
                log(f"    ef_search={ef_search}: recall {point['recall']}, p50 {point['p50_ms']} ms")
            entry["indexes"].append(build)
            if "load" not in result:
                result["load"] = {"rows": n, "layout": layout, "m": m, "ef_construction": ef_construction,
                                  "copy_s": entry["copy_s"], "index_s": build["build_s"], "index_mb": build["index_mb"],
                                  "analyze_s": entry["key_and_analyze_s"],
                                  "copy_total_s": round(entry["copy_s"] + build["build_s"] + entry["key_and_analyze_s"], 2)}
        if layout != layouts[-1]:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")
    if site_table:
        log(f"{n:,}: the selector through the ORM, and one new image")
        result["site_path"] = site_path_latency(image_ids, identity)
        result["incremental_insert"] = incremental_insert(identity)
    connection.close()
    result["wall_s"] = round(time.perf_counter() - began, 1)
    return result
