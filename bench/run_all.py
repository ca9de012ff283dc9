"""Run the query-side benchmarks and fill in docs/benchmarks.md and its plots.

    .venv/bin/python bench/run_all.py                    # 10k, 100k, 1M (make bench)
    .venv/bin/python bench/run_all.py --quick            # 10k, short runs
    .venv/bin/python bench/run_all.py --sizes 1000000    # one size; the others' results are kept
    .venv/bin/python bench/run_all.py --only pages       # one part: nn, pages or precompute
    .venv/bin/python bench/run_all.py --only uploads     # the upload page against import_images (bench/uploads.py)
    .venv/bin/python bench/run_all.py --only pages --page-variants ""   # the site's gunicorn only
    .venv/bin/python bench/run_all.py --report-only

Index parameters are swept at --sweep-size; larger sizes build only the configuration the
sweep recommends (or --large-configs), smaller ones the site's own (as
similarity.models.Embedding declares it). Results accumulate in bench/out/results.json,
keyed by size; every invocation is listed there, so a report may combine several runs.
"""

from __future__ import annotations

import argparse
import sys
import time

import common
import report


def pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in pair.split("/")) for pair in text.split(",") if pair]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--sizes", type=ints, default=None, help="vector counts, e.g. 10000,100000,1000000")
    add("--quick", action="store_true", help="10k only, fewer queries, short load runs")
    add("--only", choices=["nn", "pages", "precompute", "uploads"],
        help="one part (pages: loads --page-size images first; uploads: bench/uploads.py, its own servers and "
        "docs/ingestion.md)")
    add("--sweep-size", type=int, default=100_000, help="size at which index parameters are swept")
    add("--sweep", type=pairs, default=pairs("8/32,16/64,16/128,24/128"), help="m/ef_construction pairs swept")
    add("--ef-search", type=ints, default=ints("20,40,80,160,320"))
    add("--layouts", default="vector,vector_plain,halfvec", help="storage layouts compared up to --sweep-size")
    add("--large-configs", type=pairs, default=[], help="m/ef_construction pairs above --sweep-size "
        "(default: the recommended one)")
    add("--merge", action="store_true", help="add this run's index configurations to the size's earlier results")
    add("--queries", type=int, default=200, help="query images per size")
    add("--exact-queries", type=int, default=100, help="of which timed as exact search (≤100k)")
    add("--exact-queries-large", type=int, default=30, help="exact searches above 100k")
    add("--throughput-min", type=int, default=100_000, help="smallest size with the throughput runs "
        "(the largest always has them)")
    add("--seconds", type=float, default=5, help="duration of each throughput run")
    add("--naive-max", type=int, default=100_000, help="largest size that also times bulk_create")
    add("--page-size", type=int, default=100_000, help="size at which pages are loaded")
    add("--page-seconds", type=float, default=8, help="duration of each wrk run")
    add("--page-rounds", type=int, default=2, help="interleaved rounds; each page's median is reported")
    add("--page-connections", type=int, default=4)
    add("--page-variants", type=lambda text: [v.strip() for v in text.split(";") if v.strip()],
        default=["--worker-class gthread --threads 2", "--max-requests 0"],
        help="configurations measured beside the site's, separated by ';': GUNICORN_CMD_ARGS, and NAME=value "
        "words for settings (e.g. CLICKS_RECORDING=false)")
    add("--page-tag-fraction", type=float, default=0.01, help="share of the images the bench tag covers")
    add("--page-ingest", type=int, default=1000, help="images uploaded and embedded by a worker while the cached "
        "pages are driven, for the page cache's hit rates (0: not measured)")
    add("--page-ingest-stale", type=float, default=5, help="PAGE_CACHE_INGEST_STALE_SECONDS of the second "
        "ingest measurement (the first announces every change at once)")
    add("--skip-pages", action="store_true")
    add("--skip-precompute", action="store_true")
    add("--report-only", action="store_true")
    add("--keep-server", action="store_true", help="leave the bench PostgreSQL running")
    options = parser.parse_args(argv)
    if options.quick:
        options.sizes = options.sizes or [10_000]
        options.sweep_size = min(options.sizes)
        options.sweep, options.ef_search = pairs("16/64,16/128"), ints("20,40,80")
        options.queries, options.exact_queries = 50, 20
        options.seconds, options.page_seconds = 2, 3
        options.page_size, options.page_rounds, options.page_variants = min(options.sizes), 1, []
        options.naive_max = 10_000
    options.sizes = options.sizes or [10_000, 100_000, 1_000_000]
    return options


def measure_size(n: int, options, results: dict) -> None:
    import nn

    large = n > options.sweep_size
    choice = report.recommend(results) if large else None
    site = nn.site_schema()
    chosen = (choice["m"], choice["ef_construction"]) if choice else (site["m"], site["ef_construction"])
    if large and options.large_configs:
        chosen = options.large_configs[0]
    measured = nn.run_size(
        n, sweep=options.sweep if n == options.sweep_size else options.large_configs if large else [],
        chosen=chosen, layouts=[choice["layout"] if choice else site["layout"]] if large else options.layouts.split(","),
        ef_values=options.ef_search, query_count=options.queries,
        exact_count=options.exact_queries if n <= 100_000 else options.exact_queries_large,
        seconds=options.seconds, naive=n <= options.naive_max, site_table=not large,
        throughput=n >= options.throughput_min or n == max(options.sizes),
    )
    earlier = results["sizes"].get(str(n))
    if options.merge and earlier:
        report.merge_indexes(earlier, measured)
    else:
        results["sizes"][str(n)] = measured


def pages_measure(options, results: dict) -> None:
    import nn
    import pages
    import tags

    from devtools import services
    from similarity.models import Embedding
    from similarity.weights import model_identity

    if Embedding.objects.exclude(model_identity=model_identity()).exists():  # another model's vectors
        Embedding.objects.all().delete()
    nn.site_table_prepare(options.page_size)
    tags.tag_prepare(options.page_size, options.page_tag_fraction)
    broker_url = services.redis_url(services.redis_start(common.DATA_DIR))
    tag_images = int(options.page_size * options.page_tag_fraction)
    settings = {"broker_url": broker_url, "tag_slug": tags.TAG_SLUG, "tag_images": tag_images,
                "rounds": options.page_rounds, "connections": options.page_connections,
                "seconds": options.page_seconds}
    # Saved after each part: the site's configuration, the ingest, then each variant.
    results["pages"] = pages.run(options.page_size, **settings)
    results["pages"]["command"] = results["runs"][-1]
    common.save("results.json", results)
    if options.page_ingest:
        # Every ingest change announced at once, then with the staleness bound the scale plan gives.
        for key, stale_seconds in (("ingest", 0), ("ingest_bounded", options.page_ingest_stale)):
            results["pages"][key] = pages.ingest_hit_rates(
                options.page_size, broker_url=broker_url, tag_slug=tags.TAG_SLUG, tag_images=tag_images,
                uploads=options.page_ingest, connections=options.page_connections, stale_seconds=stale_seconds)
            common.save("results.json", results)
    for arguments in options.page_variants:
        measured = pages.run(options.page_size, gunicorn_arguments=arguments, **settings)
        results["pages"]["configurations"][arguments] = measured["configurations"][arguments]
        common.save("results.json", results)


def database_measure(options, results: dict) -> None:
    """Everything that needs the bench's PostgreSQL: queries, loading, pages."""
    # A broker, media and the random weights for the page benchmark's ingest (a worker embeds
    # uploads; nothing downloads weights); the vectors the bench loads take the same identity.
    common.django_setup(common.DATA_DIR, broker=True, MEDIA_ROOT=str(common.DATA_DIR / "media"),
                        EMBEDDING_WEIGHTS="random")
    try:
        common.cluster_configure()
        for n in sorted(options.sizes) if options.only in (None, "nn") else []:
            measure_size(n, options, results)
            common.save("results.json", results)
            if n == options.page_size and options.only is None and not options.skip_pages:
                pages_measure(options, results)  # before a larger size replaces the tables
        if options.only == "pages":
            pages_measure(options, results)
    finally:
        if not options.keep_server:
            common.servers_stop(common.DATA_DIR)


def main(argv=None) -> int:
    options = arguments(argv if argv is not None else sys.argv[1:])
    if options.only == "uploads":  # its own servers, results and report
        import uploads

        return uploads.main(["--report-only"] if options.report_only else
                            ["--photos", "200", "--rounds", "1"] if options.quick else [])
    results = common.load("results.json", {})
    if not options.report_only:
        results.setdefault("runs", []).append({
            "started": time.strftime("%Y-%m-%d %H:%M %Z"),
            "command": " ".join(["bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        })
        results.setdefault("sizes", {})
        if options.only != "precompute":
            database_measure(options, results)
        small = [n for n in sorted(options.sizes) if n <= 100_000]
        if options.only in (None, "precompute") and not options.skip_precompute and small:
            import precompute

            results["precompute"] = precompute.run(small)
            common.save("results.json", results)
    if results.get("sizes"):
        report.write(results)
    if results.get("pages", {}).get("configurations"):
        import pages

        pages.report(results["pages"], [results["pages"]["command"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
