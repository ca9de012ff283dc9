"""Search by example: upload to results, with the ingest worker idle and with it busy on a backlog.

    .venv/bin/python bench/search.py [--backlog 200] [--samples 20]
    .venv/bin/python bench/search.py --report-only

The whole stack as production runs it, on the bench's own PostgreSQL and Redis under
``.devdata/bench-search``: gunicorn with production settings (``imagerec/gunicorn.py``), a
`searcher` worker consuming only the searches queue and an ingest worker consuming the others
(the Procfile's two workers, started as the tests start theirs: ``devtools.workers.WorkerProcess``),
random ResNet18 weights (the forward pass costs the same as with the ImageNet weights). Each
sample is one visitor: GET /search/ for the form's CSRF token, then the photo POSTed (a
3000x2000 JPEG, as a phone takes it); the time is from the POST's first byte to the results
page's last. Phases: (a) the ingest worker idle and warm; (b) --backlog photo uploads queued
(``gallery.services.image_create``, with their thumbnail tasks, as the admin sends them) while
its consumer is held, then released: samples are taken while it works through them, and only
those that finish before the embedding queue is empty count.

Runs accumulate in ``bench/out/search-runs.json``; the last fills the ``search.*`` regions
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time

import common
import ingest
import pages
from common import ROOT, log, percentile

from devtools.workers import WorkerProcess, purge_queues, wait_for

DATA_DIR = ROOT / ".devdata" / "bench-search"
MEDIA_DIR = DATA_DIR / "media"
RUNS = "search-runs.json"
# The visitors' figure beside the ingest backlog: the search must not wait behind it.
GOAL_RATIO = 2.0


def visitor_search(session, base: str, photo: bytes) -> float:
    """One visitor's search: seconds from the POST to the results page, which must list results."""
    page = session.get(f"{base}/search/", headers=pages.HEADERS, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    headers = {**pages.HEADERS, "Origin": f"https://{pages.HOST}", "Referer": f"https://{pages.HOST}/search/"}
    start = time.perf_counter()
    # The CSRF cookie is marked Secure (HTTPS ends at the proxy), so it is handed back by hand.
    response = session.post(f"{base}/search/", data={"csrfmiddlewaretoken": token, "k": "6"},
                            files={"photo": ("visitor.jpg", photo, "image/jpeg")}, headers=headers,
                            cookies={"csrftoken": page.cookies["csrftoken"]}, timeout=60)
    seconds = time.perf_counter() - start
    if response.status_code != 200 or "/images/" not in response.text:
        raise RuntimeError(f"search failed: {response.status_code} {response.text[:300]}")
    return seconds


def samples(base: str, photos: list[bytes], count: int, *, spacing: float, until=None) -> list[float]:
    """Searches one after another (``spacing`` s apart); with ``until``, stop once it is true
    and keep only the searches that ended before."""
    import requests

    session = requests.Session()  # one visitor, one kept-alive connection
    seconds = []
    for index in range(count):
        took = visitor_search(session, base, photos[index % len(photos)])
        if until is not None and until():
            break
        seconds.append(took)
        time.sleep(spacing)
    return seconds


def summary(seconds: list[float]) -> dict:
    return {"samples": len(seconds), "p50_ms": round(1000 * percentile(seconds, 0.5)),
            "p95_ms": round(1000 * percentile(seconds, 0.95)), "max_ms": round(1000 * max(seconds))}


def run(args) -> dict:
    photos = ingest.photos_ensure(args.backlog + args.gallery + 10)
    log("Starting the bench services in .devdata/bench-search ...")
    environment = common.django_setup(DATA_DIR, broker=True, MEDIA_ROOT=str(MEDIA_DIR), EMBEDDING_WEIGHTS="random",
                                      SEARCH_RATE="100000/m")
    from imagerec.celery import app

    queues = {name: route["queue"] for name, route in app.conf.task_routes.items()}
    searches = queues["similarity.query_embed"]
    ingest_queues = sorted({queues["similarity.images_embed"], queues["gallery.renditions_create"],
                            app.conf.task_default_queue})
    purge_queues(searches, *ingest_queues)
    ingest.MEDIA_DIR = MEDIA_DIR
    ingest.gallery_reset()
    worker_env = dict(os.environ)
    searcher = WorkerProcess(worker_env, queues=searches)
    worker = WorkerProcess(worker_env, queues=",".join(ingest_queues))
    result = {"when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(["bench/search.py", *sys.argv[1:]]), "backlog": args.backlog,
              "searcher_queue": searches, "ingest_queues": ingest_queues, "cpus": os.cpu_count()}
    server = None
    try:
        log("Starting the searcher and the ingest worker ...")
        searcher.start(DATA_DIR / "workers")
        worker.start(DATA_DIR / "workers")
        log(f"A gallery of {args.gallery} photos ...")
        gallery_ids = [ingest.upload(path)[0] for path in photos[: args.gallery]]
        ingest.wait_ready(gallery_ids, timeout=300)
        wait_for(lambda: ingest.queue_size(queues["gallery.renditions_create"]) == 0, timeout=300,
                 message="the gallery's thumbnails")
        server, port = pages.gunicorn_production(
            environment["CELERY_BROKER_URL"], MEDIA_ROOT=str(MEDIA_DIR),
            SEARCH_RATE="100000/m")  # one bench client: the per-address limit is not under test
        base = f"http://127.0.0.1:{port}"
        visitor_photos = [path.read_bytes() for path in photos[-10:]]
        samples(base, visitor_photos, 3, spacing=0.2)  # warm: each worker's network, gunicorn's workers
        log(f"(a) idle workers: {args.samples} searches ...")
        result["idle"] = summary(samples(base, visitor_photos, args.samples, spacing=args.spacing))
        log(f"    p50 {result['idle']['p50_ms']} ms, p95 {result['idle']['p95_ms']} ms")

        embed_queue = queues["similarity.images_embed"]
        app.control.cancel_consumer(embed_queue, destination=[worker.hostname], reply=True, timeout=10)
        started = time.time()
        backlog_ids = [ingest.upload(path)[0] for path in photos[args.gallery : args.gallery + args.backlog]]
        log(f"(b) {len(backlog_ids)} uploads queued in {time.time() - started:.1f} s; releasing the ingest worker")
        released = time.time()
        app.control.add_consumer(embed_queue, destination=[worker.hostname], reply=True, timeout=10)
        busy = samples(base, visitor_photos, 10_000, spacing=args.spacing,
                       until=lambda: ingest.queue_size(embed_queue) == 0)
        window = time.time() - released
        drained_at = ingest.wait_ready(backlog_ids, timeout=1200)
        result["busy"] = {**summary(busy), "window_s": round(window, 1),
                          "backlog_drained_s": round(drained_at - released, 1),
                          "backlog_rate": round(len(backlog_ids) / (drained_at - released), 1)}
        log(f"    p50 {result['busy']['p50_ms']} ms, p95 {result['busy']['p95_ms']} ms over {len(busy)} searches; "
            f"backlog embedded in {result['busy']['backlog_drained_s']} s")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        worker.stop()
        searcher.stop()
        if not args.keep_services:
            common.servers_stop(DATA_DIR)
    result["ratio_p50"] = round(result["busy"]["p50_ms"] / result["idle"]["p50_ms"], 2)
    result["ratio_p95"] = round(result["busy"]["p95_ms"] / result["idle"]["p95_ms"], 2)
    return result


def write_report(run: dict) -> None:
    rows = [["(a) idle, warm workers", run["idle"]["samples"], run["idle"]["p50_ms"], run["idle"]["p95_ms"],
             run["idle"]["max_ms"]],
            [f"(b) ingest worker busy on {run['backlog']} uploads", run["busy"]["samples"], run["busy"]["p50_ms"],
             run["busy"]["p95_ms"], run["busy"]["max_ms"]]]
    met = run["ratio_p95"] <= GOAL_RATIO and run["busy"]["p95_ms"] < 1000 * run["busy"]["backlog_drained_s"] / 4
    common.fill(common.DOCS_DIR / "benchmarks.md", {
        "search.table": common.table(["ingest worker", "searches", "p50 ms", "p95 ms", "max ms"], rows),
        "search.run": f"`{run['command']}` ({run['when']})",
        "search.backlog": str(run["backlog"]),
        "search.drained_s": f"{run['busy']['backlog_drained_s']}",
        "search.window_s": f"{run['busy'].get('window_s', '—')}",
        "search.backlog_rate": f"{run['busy']['backlog_rate']}",
        "search.ratio_p50": f"{run['ratio_p50']}",
        "search.ratio_p95": f"{run['ratio_p95']}",
        "search.met": "met" if met else "**not met**",
    }, others=("",))  # the page's other regions are other scripts'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=200, help="photo uploads queued for the ingest worker")
    parser.add_argument("--gallery", type=int, default=30, help="photos embedded before the searches")
    parser.add_argument("--samples", type=int, default=20, help="searches with the workers idle")
    parser.add_argument("--spacing", type=float, default=0.3, help="seconds between one visitor's searches")
    parser.add_argument("--keep-services", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    runs = common.load(RUNS, [])
    if not args.report_only:
        runs.append(run(args))
        common.save(RUNS, runs)
    write_report(runs[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
