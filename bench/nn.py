"""Nearest-neighbour search as the site runs it: loading, HNSW builds, recall, latency, throughput.

Storage layouts compared, each in its own table with the site's columns:

- ``vector``: ``vector(512)`` (the site's type before migration 0002). A 2,056-byte value
  is over PostgreSQL's 2 kB TOAST threshold, so every row's vector lives out of line in the
  TOAST table.
- ``vector_plain``: the same type with ``SET STORAGE PLAIN``, so the vector stays in the row.
- ``halfvec``: ``halfvec(512)``, 1,032 bytes, in the row by default (the site's type now).

The site's own table, ``similarity_embedding``, is loaded and indexed as the models say
(``site_schema``: column type, HNSW operator class, m and ef_construction read from
``similarity.models.Embedding``, ef_search from settings), never from constants here.

Every query is the SQL that ``similarity.selectors.images_similar_to`` sends: one statement
that reads the image's own vector in a subquery and orders the rest by cosine distance to it
(built with the ORM, only the table name swapped), over a connection with the site's options.
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


def site_schema() -> dict:
    """The site's storage and index as its models and settings define them (needs Django set up).

    ``layout`` names the entry of LAYOUTS with the same column type and operator class.
    """
    from django.conf import settings
    from pgvector.django import HnswIndex

    from similarity.models import Embedding

    field = Embedding._meta.get_field("vector")
    column_type = field.db_type(connection=None)
    (index,) = [i for i in Embedding._meta.indexes if isinstance(i, HnswIndex)]
    opclass = index.opclasses[0] if index.opclasses else None
    layout = next(
        (name for name, spec in LAYOUTS.items()
         if spec["type"] == column_type and spec["opclass"] == opclass and not spec["plain"]),
        None,
    )
    if layout is None:
        raise RuntimeError(f"bench/nn.py LAYOUTS has no layout for the site's {column_type} with {opclass}")
    return {
        "table": SITE_TABLE,
        "layout": layout,
        "type": column_type,
        "opclass": opclass,
        "index": index.name,
        "m": index.m,
        "ef_construction": index.ef_construction,
        "ef_search": settings.HNSW_EF_SEARCH,
    }


def site_index() -> tuple[int, int]:
    """The site's HNSW (m, ef_construction), from the model's Meta."""
    schema = site_schema()
    return schema["m"], schema["ef_construction"]


def layout_table(layout: str) -> str:
    return f"bench_embedding_{layout}"


# Placeholders the ORM is given when building the SQL, swapped for each query's own values.
IDENTITY_MARK = "bench-identity-placeholder"
IMAGE_MARK = -7_777_777


def neighbour_queryset():
    """The queryset ``similarity.selectors.images_similar_to`` evaluates, for placeholder values.

    Kept in step with the selector: the image's own vector read in a subquery (an InitPlan),
    the HNSW scan ordered by the distance to it, the image itself excluded.
    """
    from django.db.models import Subquery
    from pgvector.django import CosineDistance

    from similarity.models import Embedding

    own_vector = Embedding.objects.filter(image_id=IMAGE_MARK, model_identity=IDENTITY_MARK).values("vector")[:1]
    return (
        Embedding.objects.for_model(IDENTITY_MARK)
        .exclude(image_id=IMAGE_MARK)
        .annotate(distance=CosineDistance("vector", Subquery(own_vector)))
        .order_by("distance")
        .select_related("image")
        .defer("vector")[:K]
    )


def neighbour_sql(table: str) -> tuple[str, tuple]:
    """The selector's SQL pointed at ``table``, and its parameters' placeholders in order."""
    sql, params = neighbour_queryset().query.sql_with_params()
    if set(params) - {IDENTITY_MARK, IMAGE_MARK, K}:
        raise RuntimeError(f"unexpected parameters in the selector's SQL: {params}")
    return sql.replace(f'"{SITE_TABLE}"', f'"{table}"'), params


class QuerySet:
    """The images whose neighbours are asked for (their ids; the SQL reads their vectors)."""

    def __init__(self, vectors: np.ndarray, count: int, seed: int = 7):
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(vectors), size=min(count, len(vectors)), replace=False) + 1
        self.image_ids = sorted(int(i) for i in chosen)

    def params(self, identity: str, marks: tuple):
        """One parameter tuple per query image, in the order ``neighbour_sql`` gave ``marks``."""
        values = []
        for image_id in self.image_ids:
            swap = {IDENTITY_MARK: identity, IMAGE_MARK: image_id}
            values.append(tuple(swap.get(mark, mark) for mark in marks))
        return values


def run_queries(connection, sql: str, params: list, *, exact: bool = False, repeat_warm: bool = True):
    """Latency of each query (seconds) and the neighbour ids it returned."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_indexscan = %s", ["off" if exact else "on"])
        if repeat_warm and not exact:
            for row in params:
                cursor.execute(sql, row)
                cursor.fetchall()
        latencies, found = [], []
        for row in params:
            start = time.perf_counter()
            cursor.execute(sql, row)
            rows = cursor.fetchall()
            latencies.append(time.perf_counter() - start)
            found.append([r[1] for r in rows])
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
            order = top[np.argsort(-similarities[top[:, column], column]), column]
            truth.append([int(i) + 1 for i in order])
    return truth


def recall_at_k(found: list[list[int]], truth: list[list[int]]) -> float:
    pairs = list(zip(found, truth))
    hits = sum(len(set(f[:K]) & set(t[:K])) for f, t in pairs)
    return round(hits / sum(min(K, len(t)) for _, t in pairs), 4)


def _client(sql, params, ef_search, start_at, stop_at, offset, queue):
    import common as shared

    connection = shared.connect(ef_search=ef_search)
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
    """Queries per second and latency with ``clients`` connections querying flat out."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 1.0 + 0.2 * clients
    stop_at = start_at + seconds
    workers = [
        context.Process(
            target=_client, args=(sql, params, ef_search, start_at, stop_at, i * len(params) // clients, queue)
        )
        for i in range(clients)
    ]
    for worker in workers:
        worker.start()
    latencies = []
    for _ in workers:
        latencies += queue.get()
    for worker in workers:
        worker.join()
    return {"clients": clients, "qps": round(len(latencies) / seconds, 1), **common.summary_ms(latencies)}


def relation_sizes(cursor, table: str) -> dict:
    cursor.execute(
        "SELECT pg_relation_size(oid), CASE WHEN reltoastrelid = 0 THEN 0 ELSE pg_relation_size(reltoastrelid) END"
        " FROM pg_class WHERE relname = %s",
        [table],
    )
    heap, toast = cursor.fetchone()
    return {"heap_mb": round(heap / 2**20, 1), "toast_mb": round(toast / 2**20, 1)}


def table_create(cursor, layout: str) -> str:
    spec = LAYOUTS[layout]
    table = layout_table(layout)
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(f"CREATE TABLE {table} (LIKE {SITE_TABLE} INCLUDING DEFAULTS)")
    # The copied column has the site's type, whatever it is now: set the layout's own.
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN vector TYPE {spec['type']}")
    if spec["plain"]:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN vector SET STORAGE PLAIN")
    return table


def index_build(cursor, table: str, layout: str, m: int, ef_construction: int, rows: int) -> dict:
    name = f"{table}_hnsw"
    cursor.execute(f"DROP INDEX IF EXISTS {name}")
    cursor.execute("SET maintenance_work_mem = %s", [common.build_maintenance_work_mem(rows)])
    cursor.execute("SET max_parallel_maintenance_workers = 1")
    start = time.perf_counter()
    cursor.execute(
        f"CREATE INDEX {name} ON {table} USING hnsw (vector {LAYOUTS[layout]['opclass']}) "
        f"WITH (m = {m}, ef_construction = {ef_construction})"
    )
    seconds = time.perf_counter() - start
    cursor.execute("RESET maintenance_work_mem")
    cursor.execute("SELECT pg_relation_size(%s)", [name])
    size = cursor.fetchone()[0]
    # Read the new index into shared buffers, as a running site would have it.
    cursor.execute("SELECT pg_prewarm(%s)", [name])
    return {"m": m, "ef_construction": ef_construction, "build_s": round(seconds, 2), "index_mb": round(size / 2**20, 1)}


# --- Loading the site's table ------------------------------------------------------------------


def site_table_load(connection, vectors: np.ndarray, identity: str, *, naive: bool) -> dict:
    """Load similarity_embedding the fast way (binary COPY, HNSW built afterwards) and, when
    asked, the naive way (ORM bulk_create with the index in place) first, for comparison.

    Column type, operator class, m and ef_construction are the migrated ones (``site_schema``).
    """
    from similarity.models import Embedding

    schema = site_schema()
    result = {"rows": len(vectors), "layout": schema["layout"], "type": schema["type"], "m": schema["m"],
              "ef_construction": schema["ef_construction"]}
    with connection.cursor() as cursor:
        if naive:
            cursor.execute("TRUNCATE similarity_embedding")
            start = time.perf_counter()
            batch = 1000
            for begin in range(0, len(vectors), batch):
                Embedding.objects.bulk_create(
                    [
                        Embedding(image_id=begin + i + 1, model_identity=identity, vector=vector)
                        for i, vector in enumerate(vectors[begin : begin + batch])
                    ]
                )
            result["naive_bulk_create_s"] = round(time.perf_counter() - start, 2)
            log(f"  naive bulk_create with the index in place: {result['naive_bulk_create_s']} s")

        cursor.execute(f"TRUNCATE {SITE_TABLE}")
        cursor.execute(f"DROP INDEX IF EXISTS {schema['index']}")
        start = time.perf_counter()
        common.copy_embeddings(cursor, SITE_TABLE, vectors, identity, half=LAYOUTS[schema["layout"]]["half"])
        result["copy_s"] = round(time.perf_counter() - start, 2)
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{SITE_TABLE}', 'id'), %s)", [len(vectors)])
        build = index_build(cursor, SITE_TABLE, schema["layout"], schema["m"], schema["ef_construction"],
                            rows=len(vectors))
        # index_build names the index after the table, as the migration does.
        assert f"{SITE_TABLE}_hnsw" == schema["index"], schema
        result["index_s"] = build["build_s"]
        result["index_mb"] = build["index_mb"]
        start = time.perf_counter()
        cursor.execute(f"ANALYZE {SITE_TABLE}")
        result["analyze_s"] = round(time.perf_counter() - start, 2)
        result["copy_total_s"] = round(result["copy_s"] + result["index_s"] + result["analyze_s"], 2)
        log(f"  binary COPY {result['copy_s']} s + HNSW build {result['index_s']} s")
    return result


def site_path_latency(queries: QuerySet, identity: str, count: int = 100) -> dict:
    """The whole selector as a page calls it, through the ORM, on the site's table and index
    with ef_search from settings; also how many SQL statements one call sends."""
    from django.db import connection as django_connection
    from django.test.utils import CaptureQueriesContext

    from gallery.models import Image
    from similarity.selectors import images_similar_to

    images = list(Image.objects.filter(pk__in=queries.image_ids[:count]))
    for image in images:
        images_similar_to(image=image, k=K, identity=identity)
    with CaptureQueriesContext(django_connection) as captured:
        found = images_similar_to(image=images[0], k=K, identity=identity)
    if len(found) != K:
        raise RuntimeError(f"the selector found {len(found)} neighbours, not {K}")
    latencies = []
    for image in images:
        start = time.perf_counter()
        images_similar_to(image=image, k=K, identity=identity)
        latencies.append(time.perf_counter() - start)
    return {**common.summary_ms(latencies), "queries_per_call": len(captured), **site_schema()}


def incremental_insert(identity: str, vectors: np.ndarray, count: int = 20) -> dict:
    """One new image and its vector stored the site's way, into the indexed table."""
    from django.db import connection as django_connection

    from gallery.models import Image
    from similarity.services import embeddings_store

    latencies, created = [], []
    for i in range(count):
        start = time.perf_counter()
        image = Image.objects.create(
            file=f"images/bench/new-{i}.jpg", original_name=f"new-{i}.jpg", format="JPEG", width=640,
            height=480, file_size=120000, sha256=f"new-{time.time_ns()}-{i}",
        )
        embeddings_store(vectors_by_image={image.pk: vectors[i]}, identity=identity)
        latencies.append(time.perf_counter() - start)
        created.append(image.pk)
    Image.objects.filter(pk__in=created).delete()
    with django_connection.cursor() as cursor:
        cursor.execute(f"VACUUM {SITE_TABLE}")
    return common.summary_ms(latencies)


def site_table_prepare(n: int) -> None:
    """Just the site's tables at size n, loaded the fast way (for rerunning the page benchmark)."""
    from similarity.identity import model_identity

    connection = common.connect()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT count(*) FROM gallery_image), (SELECT count(*) FROM {SITE_TABLE}),"
            " to_regclass(%s) IS NOT NULL",
            [site_schema()["index"]],
        )
        if cursor.fetchone() == (n, n, True):
            connection.close()
            return  # already loaded by an earlier run
    vectors = common.EmbeddingDistribution().sample(n)
    with connection.cursor() as cursor:
        for layout in LAYOUTS:
            cursor.execute(f"DROP TABLE IF EXISTS {layout_table(layout)}")
        cursor.execute("TRUNCATE gallery_image RESTART IDENTITY CASCADE")
        common.images_insert(cursor, n)
        cursor.execute("ANALYZE gallery_image")
    site_table_load(connection, vectors, model_identity(), naive=False)
    connection.close()


# --- One data set size ------------------------------------------------------------------------


def run_size(
    n: int,
    *,
    sweep: list[tuple[int, int]],
    chosen: tuple[int, int],
    layouts: list[str],
    ef_values: list[int],
    query_count: int,
    exact_count: int,
    seconds: float,
    naive: bool,
    site_table: bool = True,
    throughput: bool = True,
) -> dict:
    """Everything measured at one size. Without ``site_table`` the site's own table is left
    empty (the largest size, to save building a second index there): the chosen layout's
    load is timed instead, and the ORM path and the single insert are not measured."""
    from django.db import connection as django_connection

    from similarity.identity import model_identity

    identity = model_identity()
    result = {"n": n, "k": K, "identity": identity}
    began = time.perf_counter()
    log(f"{n:,} vectors: generating")
    vectors = common.EmbeddingDistribution().sample(n)

    django_connection.ensure_connection()
    connection = common.connect()
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        result["site"] = site_schema()
        for layout in LAYOUTS:
            cursor.execute(f"DROP TABLE IF EXISTS {layout_table(layout)}")
        cursor.execute("TRUNCATE gallery_image RESTART IDENTITY CASCADE")
        start = time.perf_counter()
        common.images_insert(cursor, n)
        cursor.execute("ANALYZE gallery_image")
        result["images_insert_s"] = round(time.perf_counter() - start, 2)
        result["machine"] = common.machine_description(cursor)

    if site_table:
        log(f"{n:,}: loading similarity_embedding")
        result["load"] = site_table_load(connection, vectors, identity, naive=naive)

    queries = QuerySet(vectors, query_count)
    truth = exact_neighbours(vectors, queries.image_ids)
    result["layouts"] = {}
    for layout in layouts:
        spec = LAYOUTS[layout]
        entry = result["layouts"][layout] = {"type": spec["type"], "storage": "plain" if spec["plain"] else "default"}
        with connection.cursor() as cursor:
            table = table_create(cursor, layout)
            start = time.perf_counter()
            common.copy_embeddings(cursor, table, vectors, identity, half=spec["half"])
            entry["copy_s"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            cursor.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            # The site's unique (image, model) constraint, which the selector's subquery uses.
            cursor.execute(f"CREATE UNIQUE INDEX ON {table} (image_id, model_identity)")
            cursor.execute(f"VACUUM ANALYZE {table}")
            entry["key_and_analyze_s"] = round(time.perf_counter() - start, 2)
            entry.update(relation_sizes(cursor, table))
            cursor.execute(f"SELECT pg_prewarm('{table}')")
            cursor.execute(f"SELECT reltoastrelid FROM pg_class WHERE relname = '{table}'")
            toast = cursor.fetchone()[0]
            if toast:
                cursor.execute(f"SELECT pg_prewarm({toast}::regclass)")
        sql, marks = neighbour_sql(table)
        params = queries.params(identity, marks)
        exact_params = params[:exact_count]
        result["queries"], result["exact_queries"] = len(params), len(exact_params)
        log(f"{n:,} {layout}: exact search ({len(exact_params)} queries, index disabled)")
        run_queries(connection, sql, exact_params[:3], exact=True)
        latencies, found = run_queries(connection, sql, exact_params, exact=True)
        entry["exact"] = common.summary_ms(latencies)
        # Agreement of the index-disabled search with float32 brute force (1.0 for vector).
        entry["exact"]["recall"] = recall_at_k(found, truth)
        log(f"  exact p50 {entry['exact']['p50_ms']} ms")

        entry["indexes"] = []
        configs = sweep if layout == layouts[0] and sweep else [chosen]
        if chosen not in configs:
            configs = [*configs, chosen]
        for m, ef_construction in configs:
            with connection.cursor() as cursor:
                build = index_build(cursor, table, layout, m, ef_construction, rows=n)
            log(f"  HNSW m={m} ef_construction={ef_construction}: {build['build_s']} s, {build['index_mb']} MB")
            build["ef_search"] = []
            for ef_search in ef_values:
                ef_connection = common.connect(ef_search=ef_search)
                latencies, found = run_queries(ef_connection, sql, params)
                ef_connection.close()
                point = {
                    "ef_search": ef_search,
                    "recall": recall_at_k(found, truth),
                    **common.summary_ms(latencies),
                }
                point["speedup_vs_exact"] = round(entry["exact"]["p50_ms"] / point["p50_ms"], 1)
                if (m, ef_construction) == chosen and throughput:
                    point["throughput"] = [
                        run_clients(sql, params, ef_search=ef_search, clients=clients, seconds=seconds)
                        for clients in (1, 2)
                    ]
                build["ef_search"].append(point)
                log(f"    ef_search={ef_search}: recall {point['recall']}, p50 {point['p50_ms']} ms")
            entry["indexes"].append(build)
            if not site_table and "load" not in result:
                # The site's table is skipped at this size: the chosen layout's load is the one timed.
                result["load"] = {
                    "rows": n, "layout": layout, "m": m, "ef_construction": ef_construction,
                    "copy_s": entry["copy_s"], "index_s": build["build_s"], "index_mb": build["index_mb"],
                    "analyze_s": entry["key_and_analyze_s"],
                    "copy_total_s": round(entry["copy_s"] + build["build_s"] + entry["key_and_analyze_s"], 2),
                }
        if layout != layouts[-1]:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")

    if site_table:
        log(f"{n:,}: the selector through the ORM, and one new image")
        result["site_path"] = site_path_latency(queries, identity)
        result["incremental_insert"] = incremental_insert(identity, common.EmbeddingDistribution(seed=1).sample(20))
    connection.close()
    result["wall_s"] = round(time.perf_counter() - began, 1)
    return result
