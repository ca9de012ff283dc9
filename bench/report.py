"""docs/benchmarks.md and its plots, written from bench/out/results.json.

The "## Ingestion" section belongs to bench/ingest.py; it is carried over as it stands.
"""

from __future__ import annotations

import os
import re

import common

RECALL_TARGET = 0.95
# The sweep runs at 100k, where recall is far higher than at 1M for the same settings: it
# selects for headroom. At the largest size, a point above the target leaves room for the
# sampling error of a few hundred queries (about ±0.005).
SWEEP_RECALL = 0.99
LARGE_RECALL = RECALL_TARGET + 0.01
LATENCY_TARGET_MS = 5.0
TIE_FACTOR = 1.10
SPEEDUP_TARGET = 20
PAGE_RPS_TARGET = 300
PAGE_P95_TARGET_MS = 50
INGESTION_PLACEHOLDER = "## Ingestion\n\n(filled by bench/ingest.py)\n"
# What the site's table was before migration 0002 (halfvec): results recorded before the runs
# noted the site's configuration themselves were measured on it.
PRE_HALFVEC_SITE = {"layout": "vector", "type": "vector(512)", "m": 16, "ef_construction": 64, "ef_search": 40,
                    "queries_per_call": 2}


def current_site() -> dict:
    """The site's storage, HNSW parameters and ef_search now, from its models and settings.

    In a report-only run Django is set up without a database: only the models are read.
    """
    from django.apps import apps

    if not apps.ready:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings.local")
        # A URL keeps the local settings from starting the embedded servers; nothing connects.
        os.environ.setdefault("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused")
        os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
        django.setup()
    import nn

    return nn.site_schema()


def measured_site(run: dict) -> dict:
    """The site configuration a run's own-table figures (load, selector) were measured on."""
    site = {**PRE_HALFVEC_SITE, **run.get("site", {})}
    if "queries_per_call" in run.get("site_path", {}):
        site["queries_per_call"] = run["site_path"]["queries_per_call"]
    return site


def site_words(site: dict) -> str:
    return (f"`{site['layout']}` (`{site['type']}`), m = {site['m']}, ef_construction = {site['ef_construction']}, "
            f"ef_search = {site['ef_search']}")


def sizes(results: dict) -> list[dict]:
    return [results["sizes"][key] for key in sorted(results.get("sizes", {}), key=int)]


LAYOUT_ORDER = ["vector", "vector_plain", "halfvec"]


def layouts(run: dict) -> list[tuple[str, dict]]:
    """The run's storage layouts, the site's own first."""
    return sorted(run["layouts"].items(), key=lambda item: LAYOUT_ORDER.index(item[0]) if item[0] in LAYOUT_ORDER else 99)


def cheapest_point(index: dict, recall: float) -> dict | None:
    """The smallest ef_search whose recall@10 reaches ``recall``."""
    passing = [p for p in index["ef_search"] if p["recall"] >= recall]
    return min(passing, key=lambda p: p["ef_search"]) if passing else None


def pick(options: list[tuple[float, tuple, object]]):
    """The fastest option, where latencies within TIE_FACTOR of it count as a tie broken by ``key``."""
    fastest = min(latency for latency, _, _ in options)
    ties = [option for option in options if option[0] <= fastest * TIE_FACTOR]
    return min(ties, key=lambda option: option[1])[2]


def recommend(results: dict) -> dict | None:
    """Storage, index parameters and ef_search the measurements favour.

    1. Index parameters, from the sweep (the size and layout with the most configurations):
       the lowest p50 at which a configuration reaches SWEEP_RECALL. Recall falls as the
       graph grows (a configuration at 0.97 on 100k fell below 0.8 on 1M at the same
       ef_search), so the sweep asks for headroom. Ties: better recall, then shorter build.
    2. Storage, comparing the layouts at an index configuration they all have, by the same
       measure. Ties: the smaller index, since it is what must stay in memory.
    3. At the largest size, where several configurations of that layout were built, the
       one that reaches LARGE_RECALL soonest replaces the sweep's choice, and ef_search is
       the smallest value that reaches LARGE_RECALL there.
    """
    runs = sizes(results)
    if not runs:
        return None
    sweep = max(runs, key=lambda run: (max(len(entry["indexes"]) for entry in run["layouts"].values()), run["n"]))
    sweep_layout, sweep_entry = max(layouts(sweep), key=lambda item: len(item[1]["indexes"]))

    configs = []
    for index in sweep_entry["indexes"]:
        point = cheapest_point(index, SWEEP_RECALL)
        if point:
            configs.append((point["p50_ms"], (-round(point["recall"], 2), index["build_s"]), index))
    if not configs:
        return None
    best = pick(configs)
    choice = {"m": best["m"], "ef_construction": best["ef_construction"], "sweep_n": sweep["n"],
              "sweep_layout": sweep_layout}

    shared = set.intersection(*({(i["m"], i["ef_construction"]) for i in entry["indexes"]}
                                for _, entry in layouts(sweep)))
    layout_options = []
    for config in sorted(shared):
        for layout, entry in layouts(sweep):
            index = find_index(sweep, layout, *config)
            point = cheapest_point(index, SWEEP_RECALL)
            if point:
                layout_options.append((point["p50_ms"], (index["index_mb"],), (layout, config)))
        if layout_options:
            choice["layout"], choice["layout_compared_at"] = pick(layout_options)
            break
    else:
        choice["layout"], choice["layout_compared_at"] = sweep_layout, None

    largest = runs[-1]
    choice["ef_search"], choice["ef_from_n"] = None, None
    built = largest["layouts"].get(choice["layout"], {}).get("indexes", []) if largest["n"] > sweep["n"] else []
    large_options = []
    for index in built:
        point = cheapest_point(index, LARGE_RECALL)
        if point:
            large_options.append((point["p50_ms"], (-round(point["recall"], 2), index["build_s"]), (index, point)))
    if large_options:
        index, point = pick(large_options)
        choice.update(m=index["m"], ef_construction=index["ef_construction"], ef_search=point["ef_search"],
                      ef_from_n=largest["n"])
    else:
        index = find_index(sweep, choice["layout"], choice["m"], choice["ef_construction"]) or find_index(
            sweep, sweep_layout, choice["m"], choice["ef_construction"]
        )
        point = index and cheapest_point(index, SWEEP_RECALL)
        if point:
            choice.update(ef_search=point["ef_search"], ef_from_n=sweep["n"])
    return choice


def merge_indexes(earlier: dict, measured: dict) -> None:
    """Add index configurations measured in a later run at the same size.

    Each keeps its own run's exact-search baseline, so its speedup is still a same-run ratio.
    """
    for layout, entry in measured["layouts"].items():
        target = earlier["layouts"].setdefault(layout, {**entry, "indexes": []})
        known = {(index["m"], index["ef_construction"]) for index in target["indexes"]}
        for index in entry["indexes"]:
            if (index["m"], index["ef_construction"]) not in known:
                target["indexes"].append({**index, "exact_p50_ms": entry["exact"]["p50_ms"], "separate_run": True})


def find_index(run: dict, layout: str, m: int, ef_construction: int) -> dict | None:
    for index in run["layouts"].get(layout, {}).get("indexes", []):
        if (index["m"], index["ef_construction"]) == (m, ef_construction):
            return index
    return None


def find_point(index: dict, ef_search: int) -> dict | None:
    return next((p for p in index["ef_search"] if p["ef_search"] == ef_search), None)


# --- Plots -----------------------------------------------------------------------------------


def plot_recall_latency(results: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sizes(results)
    if not runs:
        return None
    figure, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.5), squeeze=False)
    for axis, run in zip(axes[0], runs):
        for layout, entry in layouts(run):
            for index in entry["indexes"]:
                points = index["ef_search"]
                label = f"{layout} m={index['m']} efc={index['ef_construction']}"
                axis.plot([p["p50_ms"] for p in points], [p["recall"] for p in points], marker="o", label=label)
                for p in points:
                    axis.annotate(str(p["ef_search"]), (p["p50_ms"], p["recall"]), fontsize=7,
                                  textcoords="offset points", xytext=(3, -8))
            axis.axvline(entry["exact"]["p50_ms"], color="grey", linestyle=":", linewidth=1)
        axis.axhline(RECALL_TARGET, color="red", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.set_title(f"{run['n']:,} vectors (numbers: ef_search; dotted: exact)")
        axis.set_xlabel("p50 latency, ms (log scale)")
        axis.set_ylabel("recall@10")
        axis.legend(fontsize=7, loc="lower right")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = common.PLOTS_DIR / "recall-latency.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return "img/recall-latency.png"


def plot_throughput(results: dict, choice: dict | None) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pages = results.get("pages")
    runs = sizes(results)
    panels = 2 if pages else 1
    figure, axes = plt.subplots(1, panels + (1 if pages else 0), figsize=(5.5 * (panels + (1 if pages else 0)), 4.2),
                                squeeze=False)
    axis = axes[0][0]
    for run in runs:
        for layout, entry in layouts(run):
            for index in entry["indexes"]:
                for point in index["ef_search"]:
                    if "throughput" not in point:
                        continue
                    if choice and point["ef_search"] != choice["ef_search"] and len(index["ef_search"]) > 1:
                        continue
                    runs_ = point["throughput"]
                    axis.plot([r["clients"] for r in runs_], [r["qps"] for r in runs_], marker="o",
                              label=f"{run['n']:,} {layout} ef={point['ef_search']}")
    axis.set_title("Nearest-neighbour queries")
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("queries per second")
    axis.set_xticks([1, 2])
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    if pages:
        rps_axis, p95_axis = axes[0][1], axes[0][2]
        for name in ("gallery", "recommendation", "similar_json"):
            runs_ = pages.get(name, [])
            rps_axis.plot([r["connections"] for r in runs_], [r["rps"] for r in runs_], marker="o", label=name)
            p95_axis.plot([r["connections"] for r in runs_], [r["p95_ms"] for r in runs_], marker="o", label=name)
        rps_axis.axhline(PAGE_RPS_TARGET, color="red", linestyle="--", linewidth=1)
        p95_axis.axhline(PAGE_P95_TARGET_MS, color="red", linestyle="--", linewidth=1)
        rps_axis.set_title(f"Pages at {pages['images']:,} images (gunicorn, {pages['workers']} workers)")
        p95_axis.set_title("Page latency")
        for a, label in ((rps_axis, "requests per second"), (p95_axis, "p95 latency, ms")):
            a.set_xlabel("concurrent connections (wrk)")
            a.set_ylabel(label)
            a.set_xscale("log", base=2)
            a.legend(fontsize=7)
            a.grid(alpha=0.3)
    figure.tight_layout()
    path = common.PLOTS_DIR / "throughput.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return "img/throughput.png"


# --- Markdown --------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def yes(condition: bool) -> str:
    return "met" if condition else "**not met**"


def existing_ingestion_section() -> str:
    if not common.DOCS_FILE.exists():
        return INGESTION_PLACEHOLDER
    text = common.DOCS_FILE.read_text()
    match = re.search(r"^## Ingestion\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
    return match.group(0).rstrip() + "\n" if match else INGESTION_PLACEHOLDER


def goals_section(results: dict, choice: dict | None) -> str:
    out = ["## Against the goals\n"]
    rows = []
    runs = {run["n"]: run for run in sizes(results)}
    big = runs.get(1_000_000)
    if big and choice:
        index = find_index(big, choice["layout"], choice["m"], choice["ef_construction"])
        point = index and find_point(index, choice["ef_search"])
        if point:
            exact = index.get("exact_p50_ms", big["layouts"][choice["layout"]]["exact"]["p50_ms"])
            rows += [
                ["1M: recall@10", f"≥ {RECALL_TARGET}", point["recall"], yes(point["recall"] >= RECALL_TARGET)],
                ["1M: p50, one client", f"≤ {LATENCY_TARGET_MS} ms", f"{point['p50_ms']} ms",
                 yes(point["p50_ms"] <= LATENCY_TARGET_MS)],
                ["1M: speedup over exact search (same run)", f"≥ {SPEEDUP_TARGET}×",
                 f"{point['speedup_vs_exact']}× ({point['p50_ms']} ms against {exact} ms)",
                 yes(point["speedup_vs_exact"] >= SPEEDUP_TARGET)],
            ]
    else:
        rows.append(["1M", "", "not measured in these results", "**not measured**"])
    pages = results.get("pages")
    if pages:
        for name in ("recommendation", "similar_json"):
            runs_ = pages.get(name, [])
            passing = [r for r in runs_ if r["p95_ms"] <= PAGE_P95_TARGET_MS and r["errors"] == 0]
            best = max(passing, key=lambda r: r["rps"]) if passing else max(runs_, key=lambda r: r["rps"])
            rows.append([
                f"{pages['images']:,}: {name} page, most req/s with p95 ≤ {PAGE_P95_TARGET_MS} ms",
                f"≥ {PAGE_RPS_TARGET} req/s",
                f"{best['rps']} req/s, p95 {best['p95_ms']} ms ({best['connections']} connections)",
                yes(bool(passing) and best["rps"] >= PAGE_RPS_TARGET),
            ])
        counts = pages["queries_per_page"]
        constant = all(len(set(per_k.values())) == 1 for per_k in counts.values())
        rows.append(["SQL queries per page", "constant in k",
                     ", ".join(f"{name} {list(per_k.values())[0]}" for name, per_k in counts.items()),
                     yes(constant) + " (tests/gallery/test_api.py asserts it)"])
    out.append(table(["Goal", "Target", "Measured", ""], rows))
    return "\n".join(out)


def findings_section(results: dict, choice: dict | None) -> str:
    """The ratios that decide the defaults, each from a single run, beside its absolute figures."""
    runs = sizes(results)
    lines = ["## Findings\n"]
    with_layouts = [run for run in runs if {"vector", "vector_plain", "halfvec"} <= set(run["layouts"])]
    if with_layouts:
        run = with_layouts[-1]
        vector, plain, half = (run["layouts"][name] for name in ("vector", "vector_plain", "halfvec"))
        lines.append(
            f"- TOAST matters to exact scans: at {run['n']:,} vectors an exact search takes "
            f"{vector['exact']['p50_ms']} ms with `vector` (default storage: vectors out of line, "
            f"{vector['toast_mb']} MB of TOAST), {plain['exact']['p50_ms']} ms with `STORAGE PLAIN` "
            f"({vector['exact']['p50_ms'] / plain['exact']['p50_ms']:.1f}× faster) and "
            f"{half['exact']['p50_ms']} ms with `halfvec` "
            f"({vector['exact']['p50_ms'] / half['exact']['p50_ms']:.1f}× faster). HNSW searches read "
            "vectors from the index, so the layout hardly changes their latency; it changes the index size "
            f"({vector['indexes'][-1]['index_mb']} MB for vector, {half['indexes'][-1]['index_mb']} MB for halfvec "
            "at the same m and ef_construction)."
        )
        if half["indexes"] and vector["indexes"]:
            v = find_index(run, "vector", half["indexes"][-1]["m"], half["indexes"][-1]["ef_construction"])
            if v:
                pairs = [(a, b) for a in v["ef_search"] for b in half["indexes"][-1]["ef_search"]
                         if a["ef_search"] == b["ef_search"]]
                lines.append(
                    "- halfvec's recall@10 beside vector's at the same ef_search: "
                    + ", ".join(f"ef {a['ef_search']}: {b['recall']} / {a['recall']}" for a, b in pairs) + "."
                )
    for run in runs:
        load = run.get("load", {})
        if load.get("naive_bulk_create_s"):
            lines.append(
                f"- Loading {run['n']:,} vectors: binary COPY then the index build takes {load['copy_total_s']} s "
                f"against {load['naive_bulk_create_s']} s for `bulk_create` into the indexed table "
                f"({load['naive_bulk_create_s'] / load['copy_total_s']:.1f}× faster); the COPY itself is "
                f"{load['copy_s']} s, the rest is the HNSW build."
            )
    inserts = {run["n"]: run.get("incremental_insert") for run in runs}
    for r in results.get("precompute", []):
        if r.get("mode") == "blocked" and inserts.get(r["n"]):
            insert = inserts[r["n"]]
            lines.append(
                f"- At {r['n']:,} images the original design's full top-k recomputation takes {r['seconds']} s "
                f"and {r['peak_rss_mb']} MB; one new image here costs {insert['p50_ms']} ms "
                f"({r['seconds'] * 1000 / insert['p50_ms']:,.0f}× less), and its neighbours are current at once."
            )
    return "\n".join(lines) + "\n"


def recommendation_section(results: dict, choice: dict | None) -> str:
    if not choice:
        return "## Recommended defaults\n\nNo configuration reached the recall target.\n"
    sweep = results["sizes"][str(choice["sweep_n"])]
    layout = sweep["layouts"][choice["layout"]]
    compared = choice.get("layout_compared_at")
    evidence = []
    largest = sizes(results)[-1]
    index = find_index(largest, choice["layout"], choice["m"], choice["ef_construction"])
    point = index and choice["ef_search"] and find_point(index, choice["ef_search"])
    if point:
        exact = index.get("exact_p50_ms", largest["layouts"][choice["layout"]]["exact"]["p50_ms"])
        evidence.append(
            f"At {largest['n']:,} vectors these settings give recall@10 {point['recall']} at p50 "
            f"{point['p50_ms']} ms (p95 {point['p95_ms']} ms) against {exact} ms for exact search in the same "
            f"run ({point['speedup_vs_exact']}×)."
        )
    lines = [
        "## Recommended defaults\n",
        f"- storage: **{choice['layout']}** (`{layout['type']}`, storage {layout['storage']})",
        f"- HNSW: **m = {choice['m']}, ef_construction = {choice['ef_construction']}**",
        f"- `hnsw.ef_search` (setting `HNSW_EF_SEARCH`): **{choice['ef_search']}**",
        "",
        *evidence,
        "",
        "How the script chooses (`bench/report.py`, `recommend`): index parameters from the sweep at "
        f"{choice['sweep_n']:,} vectors on `{choice['sweep_layout']}`, the lowest p50 at which a configuration "
        f"reaches recall@10 ≥ {SWEEP_RECALL} (headroom: recall falls steeply as the graph grows); storage by "
        "the same measure, comparing the layouts"
        + (f" at m = {compared[0]}, ef_construction = {compared[1]}" if compared else "")
        + f"; at the largest size, the configuration of that storage that reaches recall@10 ≥ {LARGE_RECALL} "
        f"at the lowest p50, with the smallest such ef_search (the target plus room for the sampling error of "
        f"{largest['queries']} queries). Latencies within 10 % count as a tie (noise on a shared machine), "
        "settled by recall, then build time or index size.",
        "",
        site_sentence(choice),
        "",
    ]
    return "\n".join(lines)


def site_sentence(choice: dict) -> str:
    site = current_site()
    same = (site["layout"], site["m"], site["ef_construction"], site["ef_search"]) == (
        choice["layout"], choice["m"], choice["ef_construction"], choice["ef_search"])
    return (
        f"The site today uses {site_words(site)} (`similarity/models.py` and its migrations, setting "
        f"`HNSW_EF_SEARCH`): " + ("the recommended defaults." if same else "not the recommended defaults.")
    )


def loading_section(results: dict) -> str:
    rows = []
    for run in sizes(results):
        load = run["load"]
        naive = load.get("naive_bulk_create_s")
        site = measured_site(run)
        where = (f"{load.get('layout', site['layout'])}, m={load.get('m', site['m'])} "
                 f"efc={load.get('ef_construction', site['ef_construction'])}")
        rows.append([
            f"{run['n']:,}", where, run["images_insert_s"], load["copy_s"], load["index_s"], load["copy_total_s"],
            naive if naive is not None else "not run",
            f"{naive / load['copy_total_s']:.1f}×" if naive else "",
        ])
    return "\n".join([
        "## Bulk loading\n",
        "Loading `similarity_embedding` two ways, after the same image rows (inserted from "
        "`generate_series` inside the server). **Fast:** binary `COPY` from a stream built with numpy "
        "(pgvector's binary form: dimensions, then big-endian floats), with the HNSW index dropped first "
        "and built afterwards (the type, m and ef_construction the migrations give it, as the table's "
        "second column shows) with `maintenance_work_mem` "
        "sized to hold the whole graph and one parallel worker beside the leader, then `ANALYZE`. "
        "**Naive:** the ORM's `bulk_create` in batches of 1,000 with the index in place, so every row "
        "is an HNSW insert. Times in seconds.\n",
        "Above the sweep size the site's own table is not loaded (it would mean a second million-row "
        "index build); the recommended layout's table is timed instead, loaded the same fast way. "
        "The naive load runs only up to 100k: it grows faster than linearly, since every HNSW insert "
        "searches a bigger graph.\n",
        table(["vectors", "table loaded", "image rows", "COPY", "HNSW build", "fast total (with key, ANALYZE)",
               "naive bulk_create", "naive / fast"], rows),
    ])


def builds_section(results: dict) -> str:
    rows = []
    for run in sizes(results):
        for layout, entry in layouts(run):
            for index in entry["indexes"]:
                rows.append([f"{run['n']:,}", layout, index["m"], index["ef_construction"], index["build_s"],
                             index["index_mb"]])
    return "\n".join([
        "## HNSW builds\n",
        "Built after loading, one parallel worker beside the leader (two cores), "
        "`maintenance_work_mem` sized to hold the graph.\n",
        table(["vectors", "storage", "m", "ef_construction", "build, s", "index, MB"], rows),
    ])


def queries_section(results: dict, choice: dict | None) -> str:
    out = [
        "## Nearest-neighbour queries\n",
        "Each query is the SQL `similarity.selectors.images_similar_to` sends (built with the ORM, "
        "only the table name changed for the other layouts): the cosine distance to the image's own "
        "vector (read in a subquery, in the same statement, since the site's migration 0002; runs "
        "recorded before that passed it as a literal), "
        "filtered to the model identity, the image itself excluded, joined to its image row, "
        "`LIMIT 10`, over a connection with the site's options (`hnsw.iterative_scan = relaxed_order`) "
        "and the `hnsw.ef_search` shown. Query images are drawn at random from the data set. Recall@10 "
        "is measured against exact float32 neighbours; the exact search itself is the same SQL with "
        "`enable_indexscan = off` (its recall column shows it agrees with float32 brute force). "
        "p50/p95 come from one client running the queries back to back after a warm-up pass.\n",
    ]
    for run in sizes(results):
        rows = []
        for layout, entry in layouts(run):
            rows.append([layout, "exact (no index)", "", entry["exact"]["recall"], entry["exact"]["p50_ms"],
                         entry["exact"]["p95_ms"], "1×"])
            for index in entry["indexes"]:
                if index.get("separate_run"):
                    rows.append([layout, f"exact, in the run that built m={index['m']} efc={index['ef_construction']}",
                                 "", "", index["exact_p50_ms"], "", "1×"])
                for p in index["ef_search"]:
                    rows.append([layout, f"m={index['m']} efc={index['ef_construction']}", p["ef_search"],
                                 p["recall"], p["p50_ms"], p["p95_ms"], f"{p['speedup_vs_exact']}×"])
        out.append(f"### {run['n']:,} vectors ({run['queries']} queries, {run['exact_queries']} exact)\n")
        out.append(table(["storage", "index", "ef_search", "recall@10", "p50 ms", "p95 ms", "p50 speedup vs exact"], rows))
        site = run.get("site_path")
        if site:
            measured = measured_site(run)
            how = ("one query: the image's own vector read in a subquery, which the index scan orders by"
                   if measured["queries_per_call"] == 1 else
                   f"{measured['queries_per_call']} queries: the vector, then the index scan")
            out.append(
                f"The whole selector as a page calls it, through the ORM on `similarity_embedding` "
                f"({site_words(measured)} from settings"
                + ("" if "site" in run else ", the site's configuration before migration 0002")
                + f"; {how}): "
                f"p50 {site['p50_ms']} ms, p95 {site['p95_ms']} ms.\n"
            )
    out.append("![recall@10 against p50 latency](img/recall-latency.png)\n")

    out.append("### Throughput with one and two clients\n")
    out.append("Each client is its own process and connection, querying flat out for the stated time; "
               "the table is for the index configuration used at that size.\n")
    rows = []
    for run in sizes(results):
        for layout, entry in layouts(run):
            for index in entry["indexes"]:
                for p in index["ef_search"]:
                    for t in p.get("throughput", []):
                        rows.append([f"{run['n']:,}", layout, f"m={index['m']} efc={index['ef_construction']}",
                                     p["ef_search"], t["clients"], t["qps"], t["p50_ms"], t["p95_ms"]])
    out.append(table(["vectors", "storage", "index", "ef_search", "clients", "queries/s", "p50 ms", "p95 ms"], rows))
    out.append("![throughput against concurrency](img/throughput.png)\n")
    return "\n".join(out)


def toast_section(results: dict) -> str:
    rows = []
    for run in sizes(results):
        base = run["layouts"].get("vector", {}).get("exact", {}).get("p50_ms")
        for layout, entry in layouts(run):
            ratio = f"{base / entry['exact']['p50_ms']:.1f}×" if base else ""
            rows.append([f"{run['n']:,}", layout, entry["type"], entry["storage"], entry["heap_mb"],
                         entry["toast_mb"], entry["copy_s"], entry["exact"]["p50_ms"], ratio])
    return "\n".join([
        "## Storage layout and TOAST\n",
        "A `vector(512)` value is 2,056 bytes, over PostgreSQL's 2 kB TOAST threshold, so with the "
        "type's default (external) storage every vector sits out of line in the TOAST table and an "
        "exact scan makes an extra index lookup and page read per row. `SET STORAGE PLAIN` keeps it "
        "in the row (three rows to an 8 kB page); `halfvec(512)` is 1,032 bytes and stays in the row "
        "anyway. HNSW searches read vectors from the index, so this matters most to exact scans.\n",
        table(["vectors", "storage", "type", "storage setting", "heap MB", "TOAST MB", "COPY s", "exact p50 ms",
               "exact speedup vs vector"], rows),
    ])


def pages_section(results: dict) -> str:
    pages = results.get("pages")
    if not pages:
        return "## Pages under load\n\nNot measured in these results.\n"
    counts = pages["queries_per_page"]
    out = [
        "## Pages under load\n",
        f"gunicorn ({pages['workers']} sync workers) with `imagerec.settings.production`, loopback only, "
        f"driven by wrk for {pages['seconds']:.0f} s per row, each request for a random one of "
        f"{pages['images']:,} images (the gallery: its first page). wrk runs on the same two cores. "
        "The recommendation page and the JSON endpoint ask for the default k.\n",
        "SQL queries per page (counted through Django, k = 1 and k = 20): "
        + "; ".join(f"{name}: {', '.join(f'{k} → {v}' for k, v in per_k.items())}" for name, per_k in counts.items())
        + ".\n",
    ]
    rows = []
    for name in ("gallery", "recommendation", "similar_json"):
        for r in pages.get(name, []):
            rows.append([name, r["connections"], r["rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["errors"]])
    out.append(table(["page", "connections", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"], rows))
    return "\n".join(out)


def precompute_section(results: dict) -> str:
    rows = []
    inserts = {run["n"]: run.get("incremental_insert") for run in sizes(results)}
    for r in results.get("precompute", []):
        insert = inserts.get(r["n"])
        if "skipped" in r:
            rows.append([f"{r['n']:,}", r["mode"], "—", r["skipped"], "", ""])
            continue
        ratio = f"{r['seconds'] * 1000 / insert['p50_ms']:,.0f}×" if insert else ""
        rows.append([f"{r['n']:,}", r["mode"], r["seconds"], r["peak_rss_mb"],
                     insert["p50_ms"] if insert else "", ratio])
    return "\n".join([
        "## Against the original design: precomputed top-k lists\n",
        "The original app precomputed every image's most similar images offline, so each new image "
        "meant recomputing every list. Here that job is numpy on the same vectors (top 10, float32, "
        "in a child process): `full` forms the whole n × n similarity matrix, `blocked` 2,048 rows at a "
        "time. Against it, one new image here: an image row plus `similarity.services.embeddings_store` "
        "into the indexed table (median of 20, measured in the run that measured that size's queries).\n",
        table(["images", "precompute", "seconds", "peak memory MB", "one insert here, p50 ms", "precompute / insert"],
              rows),
    ])


def machine_section(results: dict) -> str:
    runs = sizes(results)
    machine = runs[-1]["machine"] if runs else {}
    settings = machine.get("server_settings", {})
    return "\n".join([
        "## Machine\n",
        f"- CPU: {machine.get('cpu')}, {machine.get('cores')} cores; memory {machine.get('memory_gib')} GiB; "
        f"{machine.get('os')}",
        f"- PostgreSQL {machine.get('postgresql')} with pgvector {machine.get('pgvector')} (the embedded server), "
        f"Python {machine.get('python')}, numpy {machine.get('numpy')}",
        "- Bench cluster settings (ALTER SYSTEM on the bench cluster only): "
        + ", ".join(f"`{k} = {v}`" for k, v in settings.items()),
        "- Runs behind these figures: "
        + "; ".join(f"`{run['command']}` ({run['started']})" for run in results.get("runs", [])) + ".",
        "- The machine's two cores were shared with other work during the run, and every process ran at "
        "the lowest CPU priority, so absolute figures are pessimistic; ratios within one run compare "
        "like with like.",
        "",
    ])


def write(results: dict) -> None:
    common.PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    choice = recommend(results)
    plot_recall_latency(results)
    plot_throughput(results, choice)
    runs = sizes(results)
    parts = [
        "# Benchmarks\n",
        "Nearest-neighbour search, pages under load and bulk loading, measured on synthetic "
        "embeddings shaped like ResNet18 features: a Gaussian mixture of 2,000 clusters of very "
        "different sizes, non-negative (as after a ReLU), with per-dimension scales and L2 "
        "normalisation, so a neighbour sits at cosine 0.8 to 0.9 and an unrelated image near 0.4. "
        "Sizes: " + ", ".join(f"{run['n']:,}" for run in runs) + " vectors of 512 dimensions, each a gallery "
        "image row with its embedding.\n",
        "## Reproduce\n",
        "```\nmake bench                                        # 10k, 100k and 1M\n"
        ".venv/bin/python bench/run_all.py --quick          # 10k only, a few minutes\n"
        ".venv/bin/python bench/run_all.py --sizes 100000   # one size; other sizes' results are kept\n"
        ".venv/bin/python bench/run_all.py --pages-only     # the page benchmark alone (100k)\n"
        ".venv/bin/python bench/run_all.py --report-only    # rewrite this page from bench/out/results.json\n```\n",
        "Wall time per size in the run shown here: "
        + ", ".join(f"{run['n']:,}: {run['wall_s'] / 60:.0f} min" for run in runs if "wall_s" in run)
        + " (pages and the precompute comparison come on top: about 4 and 2 minutes).\n\n"
        "The scripts use their own embedded PostgreSQL cluster under `.devdata/bench` (never the dev "
        "site's or the tests'), stop it when done, and need `wrk` for the page benchmark "
        "(`apt-get install wrk`). Everything is written to `bench/out/results.json`, this page and "
        "`docs/img/`.\n",
        machine_section(results),
        goals_section(results, choice),
        recommendation_section(results, choice),
        findings_section(results, choice),
        queries_section(results, choice),
        toast_section(results),
        builds_section(results),
        loading_section(results),
        pages_section(results),
        precompute_section(results),
        existing_ingestion_section(),
    ]
    common.DOCS_FILE.write_text("\n".join(parts))


if __name__ == "__main__":
    write(common.results_load())
