"""The tables, figures and plots of docs/benchmarks.md, from bench/out/results.json.

The page's prose is the Markdown file's own; this fills in its marked regions
(``common.fill``) and draws docs/img/recall-latency.png and docs/img/throughput.png.
The ``ingest.*`` regions belong to bench/ingest.py.
"""

from __future__ import annotations

import os

import common

DOCS_FILE = common.DOCS_DIR / "benchmarks.md"
RECALL_TARGET = 0.95
# The sweep runs at 100k, where recall is far higher than at 1M for the same settings: it asks
# for headroom. At the largest size, the target plus room for the sampling error of a few
# hundred queries (about ±0.005).
SWEEP_RECALL = 0.99
LARGE_RECALL = RECALL_TARGET + 0.01
LATENCY_TARGET_MS = 5.0
TIE_FACTOR = 1.10  # latencies within 10 % tie (noise on a shared machine)
SPEEDUP_TARGET = 20
LAYOUT_ORDER = ["vector", "vector_plain", "halfvec"]


def sizes(results: dict) -> list[dict]:
    return [results["sizes"][key] for key in sorted(results.get("sizes", {}), key=int)]


def layouts(run: dict) -> list[tuple[str, dict]]:
    return sorted(run["layouts"].items(), key=lambda item: LAYOUT_ORDER.index(item[0]))


def find_index(run: dict, layout: str, m: int, ef_construction: int) -> dict | None:
    indexes = run["layouts"].get(layout, {}).get("indexes", [])
    return next((i for i in indexes if (i["m"], i["ef_construction"]) == (m, ef_construction)), None)


def find_point(index: dict, ef_search: int) -> dict | None:
    return next((p for p in index["ef_search"] if p["ef_search"] == ef_search), None)


def cheapest_point(index: dict, recall: float) -> dict | None:
    """The smallest ef_search whose recall@10 reaches ``recall``."""
    return min((p for p in index["ef_search"] if p["recall"] >= recall), key=lambda p: p["ef_search"], default=None)


def pick(options: list[tuple[float, tuple, object]]):
    """The fastest option; latencies within TIE_FACTOR of it tie, broken by the second item."""
    fastest = min(latency for latency, _, _ in options)
    return min((o for o in options if o[0] <= fastest * TIE_FACTOR), key=lambda o: o[1])[2]


def recommend(results: dict) -> dict | None:
    """Storage, index parameters and ef_search the measurements favour.

    1. Index parameters from the sweep (the size and layout with the most configurations): the
       lowest p50 at which one reaches SWEEP_RECALL; ties: better recall, then shorter build.
    2. Storage, comparing the layouts by the same measure at a configuration they all have;
       ties: the smaller index, since it is what must stay in memory.
    3. At the largest size, where several configurations of that layout were built, the one
       that reaches LARGE_RECALL soonest, with the smallest ef_search that does.
    """
    runs = sizes(results)
    if not runs:
        return None
    sweep = max(runs, key=lambda run: (max(len(e["indexes"]) for e in run["layouts"].values()), run["n"]))
    sweep_layout, sweep_entry = max(layouts(sweep), key=lambda item: len(item[1]["indexes"]))
    configs = [(p["p50_ms"], (-round(p["recall"], 2), i["build_s"]), i) for i in sweep_entry["indexes"]
               if (p := cheapest_point(i, SWEEP_RECALL))]
    if not configs:
        return None
    best = pick(configs)
    choice = {"m": best["m"], "ef_construction": best["ef_construction"], "sweep_n": sweep["n"],
              "sweep_layout": sweep_layout, "layout": sweep_layout, "layout_compared_at": None}
    shared = set.intersection(*({(i["m"], i["ef_construction"]) for i in e["indexes"]} for _, e in layouts(sweep)))
    for config in sorted(shared):
        options = [(p["p50_ms"], (index["index_mb"],), layout) for layout, _ in layouts(sweep)
                   if (p := cheapest_point(index := find_index(sweep, layout, *config), SWEEP_RECALL))]
        if options:
            choice["layout"], choice["layout_compared_at"] = pick(options), config
            break
    largest = runs[-1]
    built = largest["layouts"].get(choice["layout"], {}).get("indexes", []) if largest["n"] > sweep["n"] else []
    options = [(p["p50_ms"], (-round(p["recall"], 2), i["build_s"]), (i, p)) for i in built
               if (p := cheapest_point(i, LARGE_RECALL))]
    if options:
        index, point = pick(options)
        choice.update(m=index["m"], ef_construction=index["ef_construction"], ef_search=point["ef_search"])
    else:
        index = find_index(sweep, choice["layout"], choice["m"], choice["ef_construction"]) or best
        point = cheapest_point(index, SWEEP_RECALL)
        choice["ef_search"] = point and point["ef_search"]
    return choice


def merge_indexes(earlier: dict, measured: dict) -> None:
    """Add index configurations measured by a later run at the same size; each keeps its own
    run's exact-search baseline, so its speedup stays a same-run ratio."""
    for layout, entry in measured["layouts"].items():
        target = earlier["layouts"].setdefault(layout, {**entry, "indexes": []})
        known = {(i["m"], i["ef_construction"]) for i in target["indexes"]}
        target["indexes"] += [{**i, "exact_p50_ms": entry["exact"]["p50_ms"], "separate_run": True}
                              for i in entry["indexes"] if (i["m"], i["ef_construction"]) not in known]


def current_site() -> dict:
    """The site's configuration now, from its models and settings (no database needed)."""
    from django.apps import apps

    if not apps.ready:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings.local")
        os.environ.setdefault("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused")  # nothing connects
        os.environ.setdefault("CELERY_BROKER_URL", "memory://")
        django.setup()
    import nn

    return nn.site_schema()


def site_words(site: dict) -> str:
    return (f"`{site['layout']}` (`{site['type']}`), m = {site['m']}, ef_construction = {site['ef_construction']}, "
            f"ef_search = {site['ef_search']}")


def met(condition: bool) -> str:
    return "met" if condition else "**not met**"


def config(index: dict) -> str:
    return f"m={index['m']} efc={index['ef_construction']}"


def all_points(results: dict):
    for run in sizes(results):
        for layout, entry in layouts(run):
            for index in entry["indexes"]:
                for point in index["ef_search"]:
                    yield run, layout, index, point


# --- Plots -----------------------------------------------------------------------------------


def plots(results: dict, choice: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sizes(results)
    figure, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.5), squeeze=False)
    for axis, run in zip(axes[0], runs):
        for layout, entry in layouts(run):
            for index in entry["indexes"]:
                points = index["ef_search"]
                axis.plot([p["p50_ms"] for p in points], [p["recall"] for p in points], marker="o",
                          label=f"{layout} {config(index)}")
                for p in points:
                    axis.annotate(str(p["ef_search"]), (p["p50_ms"], p["recall"]), fontsize=7,
                                  textcoords="offset points", xytext=(3, -8))
            axis.axvline(entry["exact"]["p50_ms"], color="grey", linestyle=":", linewidth=1)
        axis.axhline(RECALL_TARGET, color="red", linestyle="--", linewidth=1)
        axis.set(xscale="log", title=f"{run['n']:,} vectors (numbers: ef_search; dotted: exact)",
                 xlabel="p50 latency, ms (log scale)", ylabel="recall@10")
        axis.legend(fontsize=7, loc="lower right")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(common.DOCS_DIR / "img" / "recall-latency.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    for run, layout, index, point in all_points(results):
        if "throughput" in point and (not choice or point["ef_search"] == choice["ef_search"]
                                      or len(index["ef_search"]) == 1):
            axis.plot([t["clients"] for t in point["throughput"]], [t["qps"] for t in point["throughput"]],
                      marker="o", label=f"{run['n']:,} {layout} ef={point['ef_search']}")
    axis.set(title="Nearest-neighbour queries", xlabel="concurrent clients", ylabel="queries per second", xticks=[1, 2])
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(common.DOCS_DIR / "img" / "throughput.png", dpi=110)
    plt.close(figure)


# --- Regions of the page ---------------------------------------------------------------------


def values(results: dict, choice: dict | None) -> dict:
    runs = sizes(results)
    table = common.table
    out = {"sizes": ", ".join(f"{run['n']:,}" for run in runs),
           "wall": ", ".join(f"{run['n']:,}: {run['wall_s'] / 60:.0f} min" for run in runs)}
    machine = runs[-1]["machine"]
    out["machine"] = "\n".join([
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; memory {machine['memory_gib']} GiB; {machine['os']}",
        f"- PostgreSQL {machine['postgresql']} with pgvector {machine['pgvector']} (the embedded server), "
        f"Python {machine['python']}, numpy {machine['numpy']}",
        "- Bench cluster settings (ALTER SYSTEM on the bench cluster only): "
        + ", ".join(f"`{k} = {v}`" for k, v in sorted(machine["server_settings"].items())),
        "- Runs behind these figures: "
        + "; ".join(f"`{run['command']}` ({run['started']})" for run in results.get("runs", [])) + ".",
    ])

    # Against the goals, and the recommendation's evidence, at the largest size.
    largest = runs[-1]
    index = choice and find_index(largest, choice["layout"], choice["m"], choice["ef_construction"])
    point = index and find_point(index, choice["ef_search"])
    if point:
        out.update(goal_n=f"{largest['n'] // 1_000_000}M" if largest["n"] >= 1_000_000 else f"{largest['n']:,}",
                   largest_n=f"{largest['n']:,}", rec_recall=point["recall"], rec_p50=point["p50_ms"],
                   rec_p95=point["p95_ms"], rec_speedup=point["speedup_vs_exact"],
                   rec_exact=index.get("exact_p50_ms", largest["layouts"][choice["layout"]]["exact"]["p50_ms"]),
                   recall_met=met(point["recall"] >= RECALL_TARGET), p50_met=met(point["p50_ms"] <= LATENCY_TARGET_MS),
                   speedup_met=met(point["speedup_vs_exact"] >= SPEEDUP_TARGET))
    if choice:
        layout = runs[0]["layouts"].get(choice["layout"]) or largest["layouts"][choice["layout"]]
        compared = choice["layout_compared_at"]
        site = current_site()
        out.update(
            recommended="\n".join([
                f"- storage: **{choice['layout']}** (`{layout['type']}`, storage {layout['storage']})",
                f"- HNSW: **m = {choice['m']}, ef_construction = {choice['ef_construction']}**",
                f"- `hnsw.ef_search` (setting `HNSW_EF_SEARCH`): **{choice['ef_search']}**"]),
            sweep_n=f"{choice['sweep_n']:,}", sweep_layout=choice["sweep_layout"], sweep_recall=SWEEP_RECALL,
            large_recall=LARGE_RECALL, largest_queries=largest["queries"],
            compared_at=f" at m = {compared[0]}, ef_construction = {compared[1]}" if compared else "",
            site=site_words(site),
            site_verdict="the recommended defaults" if (site["layout"], site["m"], site["ef_construction"],
                                                        site["ef_search"]) == tuple(choice[k] for k in (
                "layout", "m", "ef_construction", "ef_search")) else "not the recommended defaults")

    # Findings: storage layouts at the largest size that has all three.
    full = [run for run in runs if set(LAYOUT_ORDER) <= set(run["layouts"])]
    if full:
        run = full[-1]
        vector, plain, half = (run["layouts"][name] for name in LAYOUT_ORDER)
        out.update(toast_n=f"{run['n']:,}", exact_vector=vector["exact"]["p50_ms"], toast_mb=vector["toast_mb"],
                   exact_plain=plain["exact"]["p50_ms"], exact_half=half["exact"]["p50_ms"],
                   plain_x=f"{vector['exact']['p50_ms'] / plain['exact']['p50_ms']:.1f}",
                   half_x=f"{vector['exact']['p50_ms'] / half['exact']['p50_ms']:.1f}")
        # vector's index beside halfvec's, at the same m and ef_construction
        v = find_index(run, "vector", half["indexes"][-1]["m"], half["indexes"][-1]["ef_construction"])
        if v:
            out.update(index_vector_mb=v["index_mb"], index_half_mb=half["indexes"][-1]["index_mb"],
                       half_recall=", ".join(f"ef {a['ef_search']}: {b['recall']} / {a['recall']}"
                                             for a in v["ef_search"] for b in half["indexes"][-1]["ef_search"]
                                             if a["ef_search"] == b["ef_search"]))
    naive = [run for run in runs if run.get("load", {}).get("naive_bulk_create_s")]
    if naive:
        load = naive[-1]["load"]
        ratios = sorted(r["load"]["naive_bulk_create_s"] / r["load"]["copy_total_s"] for r in naive)
        out.update(naive_n=f"{naive[-1]['n']:,}", fast_s=load["copy_total_s"], naive_s=load["naive_bulk_create_s"],
                   naive_x=f"{load['naive_bulk_create_s'] / load['copy_total_s']:.1f}", copy_s=load["copy_s"],
                   naive_range="–".join(dict.fromkeys(f"{ratio:.1f}" for ratio in (ratios[0], ratios[-1]))))
    inserts = {run["n"]: run["incremental_insert"] for run in runs if "incremental_insert" in run}
    rows = []
    for r in results.get("precompute", []):
        insert = inserts.get(r["n"])
        if "skipped" in r:
            rows.append([f"{r['n']:,}", r["mode"], "—", r["skipped"], "", ""])
            continue
        ratio = r["seconds"] * 1000 / insert["p50_ms"] if insert else None
        rows.append([f"{r['n']:,}", r["mode"], r["seconds"], r["peak_rss_mb"], insert and insert["p50_ms"],
                     ratio and f"{ratio:,.0f}×"])
        if r["mode"] == "blocked" and insert:
            out.update(pre_n=f"{r['n']:,}", pre_s=r["seconds"], pre_mb=r["peak_rss_mb"], insert_ms=insert["p50_ms"],
                       pre_x=f"{ratio:,.0f}")
    if rows:
        out["precompute"] = table(["images", "precompute", "seconds", "peak memory MB", "one insert here, p50 ms",
                                   "precompute / insert"], rows)

    # Tables, one row per measurement.
    sections = []
    for run in runs:
        rows = []
        for layout, entry in layouts(run):
            rows.append([layout, "exact (no index)", "", entry["exact"]["recall"], entry["exact"]["p50_ms"],
                         entry["exact"]["p95_ms"], "1×"])
            for index in entry["indexes"]:
                if index.get("separate_run"):
                    rows.append([layout, f"exact, in the run that built {config(index)}", "", "",
                                 index["exact_p50_ms"], "", "1×"])
                rows += [[layout, config(index), p["ef_search"], p["recall"], p["p50_ms"], p["p95_ms"],
                          f"{p['speedup_vs_exact']}×"] for p in index["ef_search"]]
        sections += [f"### {run['n']:,} vectors ({run['queries']} queries, {run['exact_queries']} exact)",
                     table(["storage", "index", "ef_search", "recall@10", "p50 ms", "p95 ms", "p50 speedup vs exact"],
                           rows)]
    out["queries"] = "\n\n".join(sections)
    out["selector"] = table(
        ["vectors", "the site's table and settings", "SQL statements per call", "p50 ms", "p95 ms"],
        [[f"{run['n']:,}", site_words(run["site"]), run["site_path"]["queries_per_call"], run["site_path"]["p50_ms"],
          run["site_path"]["p95_ms"]] for run in runs if "site_path" in run])
    out["throughput"] = table(
        ["vectors", "storage", "index", "ef_search", "clients", "queries/s", "p50 ms", "p95 ms"],
        [[f"{run['n']:,}", layout, config(index), p["ef_search"], t["clients"], t["qps"], t["p50_ms"], t["p95_ms"]]
         for run, layout, index, p in all_points(results) for t in p.get("throughput", [])])
    out["toast"] = table(
        ["vectors", "storage", "type", "storage setting", "heap MB", "TOAST MB", "COPY s", "exact p50 ms",
         "exact speedup vs vector"],
        [[f"{run['n']:,}", layout, e["type"], e["storage"], e["heap_mb"], e["toast_mb"], e["copy_s"],
          e["exact"]["p50_ms"], f"{run['layouts']['vector']['exact']['p50_ms'] / e['exact']['p50_ms']:.1f}×"
          if "vector" in run["layouts"] else ""] for run in runs for layout, e in layouts(run)])
    out["builds"] = table(["vectors", "storage", "m", "ef_construction", "build, s", "index, MB"],
                          [[f"{run['n']:,}", layout, i["m"], i["ef_construction"], i["build_s"], i["index_mb"]]
                           for run in runs for layout, e in layouts(run) for i in e["indexes"]])
    out["loading"] = table(
        ["vectors", "table loaded", "image rows", "COPY", "HNSW build", "fast total (with key, ANALYZE)",
         "naive bulk_create", "naive / fast"],
        [[f"{run['n']:,}", f"{load['layout']}, {config(load)}", run["images_insert_s"], load["copy_s"],
          load["index_s"], load["copy_total_s"], load.get("naive_bulk_create_s", "not run"),
          f"{load['naive_bulk_create_s'] / load['copy_total_s']:.1f}×" if "naive_bulk_create_s" in load else ""]
         for run in runs for load in [run["load"]]])
    return out


def write(results: dict) -> None:
    if not results.get("sizes"):
        raise SystemExit("No query results in bench/out/results.json: run bench/run_all.py first.")
    choice = recommend(results)
    plots(results, choice)
    common.fill(DOCS_FILE, values(results, choice), others=("ingest.", "search.", "visitors.", "pages."))


if __name__ == "__main__":
    write(common.load("results.json", {}))
