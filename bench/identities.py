"""Two models' vectors at once, as during an upgrade: one HNSW index for both, or one per model?

    .venv/bin/python bench/identities.py [--size 50000] [--queries 200]

The same synthetic embeddings as bench/nn.py under the "current" model, and a "next" model
whose vectors are the same ones with their dimensions reversed (the same distribution, other
neighbours). The queries are the site's own SQL (``neighbours_queryset``, through
``nn.neighbour_sql``), filtered to one model identity. Three states, measured in one run:

1. one model alone, one index (the site between upgrades);
2. both models, the same single index, the next model's rows added to it as workers would;
3. both models, a partial index per model (``WHERE model_identity = …``), built for the run.

Fills the ``identities`` region of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import common
import nn
from common import log

TABLE = "bench_embedding_two"
CURRENT, NEXT = "model/current", "model/next"
DATA_DIR = common.ROOT / ".devdata" / "bench-identities"
INDEX_OPTIONS = "USING hnsw (vector halfvec_cosine_ops) WITH (m = 16, ef_construction = 128)"


def measure(connection, vectors: dict[str, np.ndarray], query_ids: list[int], identities: list[str]) -> dict:
    sql, marks = nn.neighbour_sql(TABLE)
    result = {}
    for identity in identities:
        latencies, found = nn.run_queries(connection, sql, nn.query_params(query_ids, identity, marks))
        truth = nn.exact_neighbours(vectors[identity], query_ids)
        result[identity] = {"recall": nn.recall_at_k(found, truth), **common.summary_ms(latencies)}
    return result


def timed(cursor, sql: str) -> float:
    started = time.perf_counter()
    cursor.execute(sql)
    return round(time.perf_counter() - started, 2)


def run(size: int, queries: int) -> dict:
    common.django_setup(DATA_DIR)
    vectors = {CURRENT: common.EmbeddingDistribution().sample(size)}
    vectors[NEXT] = np.ascontiguousarray(vectors[CURRENT][:, ::-1])
    query_ids = sorted(np.random.default_rng(3).choice(np.arange(1, size + 1), queries, replace=False).tolist())
    connection = common.connect()
    results = {"size": size, "queries": queries}
    with connection.cursor() as cursor:
        # Room for the whole graph (about 4 kB a row at m = 16), as bench/nn.py builds them.
        cursor.execute(f"SET maintenance_work_mem = '{max(512, 2 * size * 5000 // 2**20)}MB'")
        # The query joins each neighbour's gallery row, as the pages do.
        cursor.execute("TRUNCATE gallery_image CASCADE")
        common.images_insert(cursor, size)
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(f"CREATE TABLE {TABLE} (LIKE similarity_embedding INCLUDING DEFAULTS)")
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN vector TYPE halfvec(512)")
        log(f"Loading {size:,} vectors of the current model")
        common.copy_embeddings(cursor, TABLE, vectors[CURRENT], CURRENT, half=True)
        build = timed(cursor, f"CREATE INDEX bench_two_all ON {TABLE} {INDEX_OPTIONS}")
        results["alone"] = {"build_s": build, **measure(connection, vectors, query_ids, [CURRENT])}
        log(f"One model alone: {results['alone']}")

        # The next model's vectors arrive through the index, one insert after another.
        started = time.perf_counter()
        cursor.execute(
            f"""INSERT INTO {TABLE} (id, image_id, model_identity, vector, created_at)
                SELECT id + %s, image_id, %s,
                       (SELECT array_agg(value ORDER BY position DESC) FROM unnest(vector::real[])
                        WITH ORDINALITY AS part(value, position))::halfvec(512),
                       created_at
                FROM {TABLE} WHERE model_identity = %s""",
            [size, NEXT, CURRENT],
        )
        results["shared"] = {
            "insert_s": round(time.perf_counter() - started, 2),
            **measure(connection, vectors, query_ids, [CURRENT, NEXT]),
        }
        log(f"Both models, one index: {results['shared']}")

        cursor.execute("DROP INDEX bench_two_all")
        builds = [
            timed(cursor, f"CREATE INDEX bench_two_{n} ON {TABLE} {INDEX_OPTIONS} WHERE model_identity = '{identity}'")
            for n, identity in enumerate((CURRENT, NEXT))
        ]
        results["partial"] = {"build_s": sum(builds), **measure(connection, vectors, query_ids, [CURRENT, NEXT])}
        log(f"Both models, an index each: {results['partial']}")
        cursor.execute(f"DROP TABLE {TABLE}")
    connection.close()
    common.servers_stop(DATA_DIR)
    return results


def report(results: dict) -> None:
    rows = []
    for state, label in (("alone", "one model alone, one index"), ("shared", "both models, one index"),
                         ("partial", "both models, an index per model")):
        for identity in (CURRENT, NEXT):
            if identity in results[state]:
                point = results[state][identity]
                rows.append([label, identity.split("/")[1], point["recall"], point["p50_ms"], point["p95_ms"]])
    table = common.table(["state", "model queried", "recall@10", "p50 ms", "p95 ms"], rows, "llrrr")
    common.fill(common.DOCS_DIR / "benchmarks.md", {
        "identities": table,
        "identities.size": f"{results['size']:,}",
        "identities.insert": results["shared"]["insert_s"],
        "identities.build": results["partial"]["build_s"],
    }, others=("",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--report-only", action="store_true")
    arguments = parser.parse_args()
    results = common.load("identities.json", None) if arguments.report_only else run(arguments.size, arguments.queries)
    common.save("identities.json", results)
    report(results)


if __name__ == "__main__":
    main()
