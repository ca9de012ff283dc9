"""Run the query-side benchmarks and rewrite docs/benchmarks.md with its plots.

    .venv/bin/python bench/run_all.py                    # 10k, 100k, 1M (make bench)
    .venv/bin/python bench/run_all.py --quick            # 10k, short runs
    .venv/bin/python bench/run_all.py --sizes 1000000    # one size; the others' results are kept
    .venv/bin/python bench/run_all.py --report-only

Index parameters are swept at --sweep-size; larger sizes build only the configuration the
sweep recommends (storage layout and m / ef_construction), smaller ones the site's own
(as similarity.models.Embedding declares them; the site's table is loaded with its migrated
column type and index).
Results accumulate in bench/out/results.json, keyed by size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import common
from common import log


def parse_pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in pair.split("/")) for pair in text.split(",") if pair]


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_ints, default=None, help="vector counts, e.g. 10000,100000,1000000")
    parser.add_argument("--quick", action="store_true", help="10k only, fewer queries, short load runs")
    parser.add_argument("--sweep-size", type=int, default=100_000, help="size at which index parameters are swept")
    parser.add_argument("--sweep", type=parse_pairs, default=parse_pairs("8/32,16/64,16/128,24/128"),
                        help="m/ef_construction pairs swept at --sweep-size")
    parser.add_argument("--ef-search", type=parse_ints, default=parse_ints("20,40,80,160,320"))
    parser.add_argument("--layouts", default="vector,vector_plain,halfvec",
                        help="storage layouts compared up to --sweep-size")
    parser.add_argument("--large-layouts", default="",
                        help="layouts above --sweep-size (default: the recommended one)")
    parser.add_argument("--large-site-table", action="store_true",
                        help="above --sweep-size, also load similarity_embedding with the site's index")
    parser.add_argument("--large-configs", type=parse_pairs, default=[],
                        help="m/ef_construction pairs to build above --sweep-size (default: the recommended one)")
    parser.add_argument("--merge", action="store_true",
                        help="add this run's index configurations to the size's earlier results")
    parser.add_argument("--queries", type=int, default=200, help="query images per size")
    parser.add_argument("--exact-queries", type=int, default=100, help="of which timed as exact search (≤100k)")
    parser.add_argument("--exact-queries-large", type=int, default=30, help="exact searches above 100k")
    parser.add_argument("--throughput-min", type=int, default=100_000,
                        help="smallest size with the one- and two-client throughput runs (the largest always has them)")
    parser.add_argument("--seconds", type=float, default=5, help="duration of each throughput run")
    parser.add_argument("--naive-max", type=int, default=100_000, help="largest size that also times bulk_create")
    parser.add_argument("--page-size", type=int, default=100_000, help="size at which pages are loaded")
    parser.add_argument("--page-seconds", type=float, default=10)
    parser.add_argument("--page-connections", type=parse_ints, default=parse_ints("1,2,4,8,16"))
    # One sync worker per core measured best on two cores (2, 3 and 4 tried): PostgreSQL and
    # wrk share the cores, and more workers only add switching.
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="gunicorn workers (default: one per core)")
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--skip-precompute", action="store_true")
    parser.add_argument("--precompute-only", action="store_true",
                        help="only the original design's precompute (no database), then the report")
    parser.add_argument("--pages-only", action="store_true",
                        help="load --page-size images the fast way and run only the page benchmark")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--keep-server", action="store_true", help="leave the bench PostgreSQL running")
    options = parser.parse_args(argv)
    if options.quick:
        options.sizes = options.sizes or [10_000]
        options.sweep_size = min(options.sizes)
        options.sweep = parse_pairs("16/64,16/128")
        options.ef_search = parse_ints("20,40,80")
        options.queries, options.exact_queries = 50, 20
        options.seconds, options.page_seconds = 2, 3
        options.page_size = min(options.sizes)
        options.page_connections = parse_ints("1,4,8")
        options.naive_max = 10_000
    options.sizes = options.sizes or [10_000, 100_000, 1_000_000]
    return options


def record_run(results: dict, argv) -> None:
    # Every invocation is listed: a report may combine sizes measured by separate runs.
    results.setdefault("runs", []).append({
        "started": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
    })


def main(argv=None) -> int:
    options = arguments(argv if argv is not None else sys.argv[1:])
    import report

    results = common.results_load()
    if options.report_only:
        report.write(results)
        log(f"wrote {common.DOCS_FILE.relative_to(common.ROOT)}")
        return 0

    if options.precompute_only:
        import precompute

        record_run(results, argv)
        results["precompute"] = precompute.run([n for n in sorted(options.sizes) if n <= 100_000], memory_limit_gib=8)
        common.results_save(results)
        report.write(results)
        return 0

    # Django's local settings start the bench cluster; only the database benchmarks need it.
    common.django_setup()
    import nn

    if options.pages_only:
        import pages

        record_run(results, argv)
        try:
            common.cluster_configure()
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            nn.site_table_prepare(options.page_size)
            results["pages"] = pages.run(options.page_size, workers=options.workers,
                                         connection_levels=options.page_connections, seconds=options.page_seconds)
            common.results_save(results)
        finally:
            if not options.keep_server:
                common.cluster_stop()
        report.write(results)
        return 0

    record_run(results, argv)
    results.setdefault("sizes", {})
    try:
        common.cluster_configure()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        for n in sorted(options.sizes):
            large = n > options.sweep_size
            choice = report.recommend(results) if large else None
            # Below the sweep size, the site's own index parameters (read from its models).
            chosen = (choice["m"], choice["ef_construction"]) if choice else nn.site_index()
            if large and options.large_configs:
                chosen = options.large_configs[0]
            if large:
                layouts = options.large_layouts.split(",") if options.large_layouts else [
                    choice["layout"] if choice else nn.site_schema()["layout"]
                ]
            else:
                layouts = options.layouts.split(",")
            measured = nn.run_size(
                n,
                sweep=options.sweep if n == options.sweep_size else (options.large_configs if large else []),
                chosen=chosen,
                layouts=layouts,
                ef_values=options.ef_search,
                query_count=options.queries,
                exact_count=options.exact_queries if n <= 100_000 else options.exact_queries_large,
                seconds=options.seconds,
                naive=n <= options.naive_max,
                site_table=not large or options.large_site_table,
                throughput=n >= options.throughput_min or n == max(options.sizes),
            )
            earlier = results["sizes"].get(str(n))
            if options.merge and earlier:
                report.merge_indexes(earlier, measured)
            else:
                results["sizes"][str(n)] = measured
            common.results_save(results)
            if n == options.page_size and not options.skip_pages:
                import pages

                results["pages"] = pages.run(
                    n, workers=options.workers, connection_levels=options.page_connections,
                    seconds=options.page_seconds,
                )
                common.results_save(results)
        if not options.skip_precompute:
            import precompute

            small = [n for n in sorted(options.sizes) if n <= 100_000]
            if small:
                results["precompute"] = precompute.run(small, memory_limit_gib=8)
                common.results_save(results)
    finally:
        if not options.keep_server:
            common.cluster_stop()
    report.write(results)
    log(f"wrote {common.DOCS_FILE.relative_to(common.ROOT)} and {common.PLOTS_DIR.relative_to(common.ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
