"""Lighthouse's mobile and desktop presets on every public page and the admin login, as deployed.

    .venv/bin/python bench/lighthouse.py                  # under 3 minutes on two cores (a minute more the first time)
    .venv/bin/python bench/lighthouse.py --report-only    # the report from bench/out/lighthouse.json

The site runs as production runs it: gunicorn with the site's configuration and production
settings (``pages.gunicorn_production``), behind Caddy with the project's own
``deploy/Caddyfile`` (compression, renditions from the media folder with their long caching).
Two changes to that file's configuration, made in its JSON form: the site's address is plain
HTTP on loopback, with Caddy's admin endpoint off, and every request reaches gunicorn with
``X-Forwarded-Proto: https`` and the production host name, as from a TLS-terminating Caddy
(the browser trusts loopback as a secure origin, so Lighthouse judges the pages as on HTTPS).

The gallery is made through the site's services, as the browser tests make theirs: pictures
stored by ``image_create``, their vectors by ``embeddings_store`` and marked ready, their
renditions by ``renditions_create`` (the worker's own service), some tagged. Every page is
requested once before Lighthouse loads it, so it comes from the page cache as most visitors
find it. Lighthouse is the tests' runner (``devtools/browser-audit/lighthouse.mjs``) on the
machine's Chromium, one browser per preset.

The run keeps a cluster of its own (``.devdata/bench-lighthouse``, or BENCH_DATA_DIR) and makes
its gallery afresh each time. Results go to ``bench/out/lighthouse.json`` (each preset's raw
output in ``lighthouse-<preset>.json`` beside it) and fill the ``lighthouse.*`` regions of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

import common
import pages
from common import log

RESULTS = "lighthouse.json"
PRESETS = ("mobile", "desktop")
CATEGORIES = {"performance": "performance", "accessibility": "accessibility",
              "best-practices": "best practices", "seo": "SEO"}
MINIMUM_SCORE = 0.95
RETRIES = 2
AUDIT_TOOLS = common.ROOT / "devtools" / "browser-audit"
CADDYFILE = common.ROOT / "deploy" / "Caddyfile"
# Three gallery pages' worth at the site's 12 per page would do; 18 gives page 2 half a page,
# as a gallery's last page usually is. Large enough that no rendition is blown up on a phone.
PICTURE_COUNT = 18
PICTURE_SIZE = (1024, 768)
CAPTIONS = ["Harbour at dawn", "Boats in the harbour", "Lighthouse", "Mossy stones", "Forest path", "Dunes",
            "Rain on the window", "Market stalls", "Old bridge"]
TAGS = {0: ["sea"], 1: ["sea"], 2: ["sea"], 3: ["forest"], 4: ["forest"]}


def tools() -> dict[str, str]:
    """The programs the run needs, or SystemExit saying how to get the missing ones."""
    found = {"node": shutil.which("node"), "chromium": shutil.which("chromium"), "caddy": shutil.which("caddy")}
    missing = [name for name, path in found.items() if path is None]
    if not (AUDIT_TOOLS / "node_modules" / "lighthouse").exists():
        missing.append("Lighthouse (cd devtools/browser-audit && npm ci; make test does)")
    if missing:
        raise SystemExit(f"Missing: {', '.join(missing)} (Debian: apt-get install nodejs chromium caddy)")
    return found


# --- The gallery ----------------------------------------------------------------------------


def gallery_make() -> dict[str, str]:
    """A fresh gallery of PICTURE_COUNT ready pictures with renditions; {page name: path}."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from gallery.models import Image
    from gallery.renditions import renditions_create
    from gallery.services import image_create
    from imaging import synthetic_photo
    from similarity.lifecycle import images_mark_ready
    from similarity.services import embeddings_store
    from similarity.weights import model_identity

    # Deleted through the ORM, so their files go with them (on commit).
    Image.objects.all().delete()
    rng = np.random.default_rng(common.SEED)
    images = []
    for seed in range(PICTURE_COUNT):
        buffer = io.BytesIO()
        synthetic_photo(seed, PICTURE_SIZE).save(buffer, "JPEG", quality=90)
        caption = CAPTIONS[seed % len(CAPTIONS)] + (f" {seed // len(CAPTIONS) + 1}" if seed >= len(CAPTIONS) else "")
        image = image_create(
            upload=SimpleUploadedFile(f"photo-{seed}.jpg", buffer.getvalue(), content_type="image/jpeg"),
            caption=caption, tag_names=TAGS.get(seed, []), enqueue=False,
        )
        vector = rng.random(common.DIMENSIONS).astype(np.float32)
        with transaction.atomic():
            embeddings_store(vectors_by_image={image.pk: vector / np.linalg.norm(vector)},
                             identity=model_identity())
            images_mark_ready(image_ids=[image.pk])
        renditions_create(image=image)
        images.append(image)
    newest = images[-1]  # the gallery's first card
    return {
        "gallery": "/",
        "gallery page 2": "/?page=2",
        "image": f"/images/{newest.pk}/",
        "image, diverse": f"/images/{newest.pk}/?diverse=1",
        "search": "/search/",
        "API docs": "/api/docs/",
        "not found": "/no-such-page/",
        "admin login": "/admin/login/",
    }


# --- Caddy in front of gunicorn ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def caddy_config(*, port: int, upstream_port: int, renditions_root: str) -> dict:
    """deploy/Caddyfile as JSON for plain HTTP on loopback, passing requests on as if TLS ended here."""
    environment = {**os.environ, "SITE_HOST": f"http://127.0.0.1:{port}", "UPSTREAM": f"127.0.0.1:{upstream_port}",
                   "RENDITIONS_ROOT": renditions_root}
    adapted = subprocess.run(["caddy", "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                             env=environment, capture_output=True, text=True, check=True)
    config = json.loads(adapted.stdout)
    config["admin"] = {"disabled": True}  # its default port would clash with any other Caddy here

    def proxies(node):
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                yield node
            for value in node.values():
                yield from proxies(value)
        elif isinstance(node, list):
            for value in node:
                yield from proxies(value)

    found = list(proxies(config))
    assert found, "deploy/Caddyfile proxies nothing to gunicorn"
    for proxy in found:
        proxy.setdefault("headers", {}).setdefault("request", {}).setdefault("set", {}).update(
            {"X-Forwarded-Proto": ["https"], "Host": [pages.HOST]}
        )
    return config


def caddy_start(config: dict) -> subprocess.Popen:
    path = common.DATA_DIR / "caddy.json"
    path.write_text(json.dumps(config))
    # Caddy's own state (none is needed for plain HTTP) stays in the bench's folder.
    environment = {**os.environ, "XDG_DATA_HOME": str(common.DATA_DIR / "caddy"),
                   "XDG_CONFIG_HOME": str(common.DATA_DIR / "caddy")}
    return subprocess.Popen(["caddy", "run", "--config", str(path)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fetch_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def site_ready(site: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            fetch_status(site + "/healthz")
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Caddy did not serve the site") from None
            time.sleep(0.2)


# --- Lighthouse -------------------------------------------------------------------------------


def lighthouse_run(*, preset: str, urls: list[str], node: str, chromium: str) -> dict:
    """The runner's {url: report} for one preset, from one node process and one browser."""
    result = subprocess.run(
        [node, str(AUDIT_TOOLS / "lighthouse.mjs"), preset, *urls], capture_output=True, text=True, timeout=600,
        env={**os.environ, "CHROME_PATH": chromium},
    )
    if result.returncode != 0:
        raise RuntimeError(f"Lighthouse ({preset}) failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def measure() -> dict:
    found = tools()
    if not os.environ.get("BENCH_DATA_DIR"):
        common.DATA_DIR = common.ROOT / ".devdata" / "bench-lighthouse"
    media = common.DATA_DIR / "media"
    started = time.monotonic()
    processes: list[subprocess.Popen] = []
    try:
        environment = common.django_setup(common.DATA_DIR, broker=True, MEDIA_ROOT=str(media))
        log("making the gallery")
        paths = gallery_make()
        log(f"gallery made in {time.monotonic() - started:.0f} s; starting gunicorn and Caddy")
        gunicorn, upstream_port = pages.gunicorn_production(environment["CELERY_BROKER_URL"], MEDIA_ROOT=str(media))
        processes.append(gunicorn)
        pages.cache_flush(environment["CELERY_BROKER_URL"])
        port = free_port()
        caddy = caddy_start(caddy_config(port=port, upstream_port=upstream_port,
                                         renditions_root=str(media / "renditions")))
        processes.append(caddy)
        site = f"http://127.0.0.1:{port}"
        site_ready(site, caddy)
        # Each page once, so Lighthouse gets it from the page cache; each must answer as it should.
        statuses = {name: fetch_status(site + path) for name, path in paths.items()}
        wrong = {name: status for name, status in statuses.items() if status != (404 if name == "not found" else 200)}
        if wrong:
            raise RuntimeError(f"pages answered wrongly: {wrong}")
        urls = {site + path: name for name, path in paths.items()}
        reports = {}
        for preset in PRESETS:
            log(f"Lighthouse, {preset} preset, {len(urls)} pages")
            raw = lighthouse_run(preset=preset, urls=list(urls), node=found["node"], chromium=found["chromium"])
            # Now and then Chromium's trace misses the navigation's start (NO_NAVSTART) and
            # Lighthouse scores nothing; such a page is loaded again in a fresh browser.
            for _ in range(RETRIES):
                failed = [url for url, report in raw.items() if report["runtimeError"]]
                if not failed:
                    break
                log(f"again, after a failed recording: {', '.join(urls[url] for url in failed)}")
                again = lighthouse_run(preset=preset, urls=failed, node=found["node"], chromium=found["chromium"])
                for url in failed:
                    again[url]["attempts"] = raw[url].get("attempts", 1) + 1
                raw.update(again)
            common.save(f"lighthouse-{preset}.json", raw)
            reports[preset] = {urls[url]: report for url, report in raw.items()}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        common.servers_stop(common.DATA_DIR)
    chromium_version = subprocess.run([found["chromium"], "--version"], capture_output=True, text=True).stdout.strip()
    package = json.loads((AUDIT_TOOLS / "node_modules" / "lighthouse" / "package.json").read_text())
    return {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["bench/lighthouse.py", *sys.argv[1:]]),
        "seconds": round(time.monotonic() - started),
        "pictures": PICTURE_COUNT,
        "paths": paths,
        "tools": f"Lighthouse {package['version']}, {chromium_version}",
        "machine": f"{common.cpu_model()}, {os.cpu_count()} cores",
        "reports": reports,
    }


# --- The report -------------------------------------------------------------------------------


def shortfalls(name: str, report: dict) -> tuple[list[str], list[str]]:
    """(what misses the goal, what Lighthouse fails in those categories) for one page."""
    failing = report["failing"]
    low = [CATEGORIES[category] for category in CATEGORIES
           if report["scores"].get(category) is None or report["scores"][category] < MINIMUM_SCORE]
    if name == "not found" and {audit["id"] for audit in failing if "seo" in audit["categories"]} <= {"http-status-code"}:
        # A missing page must answer 404, which SEO counts against it; nothing else fails there.
        low = [category for category in low if category != "SEO"]
    if report["cls"] is None or report["cls"] > 0:
        low.append("CLS")
    audits = [f"{audit['id']}" + (f" ({audit['displayValue']})" if audit["displayValue"] else "")
              for audit in failing if audit["categories"] and audit["id"] != "http-status-code"]
    return low, audits


def figure(value, form: str) -> str:
    return "—" if value is None else format(value, form)


def preset_table(reports: dict) -> str:
    rows = []
    for name, report in reports.items():
        scores = report["scores"]
        low, audits = shortfalls(name, report)
        if report["runtimeError"]:
            audits.insert(0, f"no score: {report['runtimeError']}")
        if report.get("attempts", 1) > 1:
            audits.insert(0, f"scored at attempt {report['attempts']}")
        seo = figure(scores.get("seo"), ".2f")
        if name == "not found" and (scores.get("seo") or 0) < MINIMUM_SCORE and "SEO" not in low:
            seo += " (its 404)"
        total = report["totalByteWeight"]
        rows.append([
            name, *(figure(scores.get(category), ".2f") for category in ("performance", "accessibility", "best-practices")),
            seo, figure(report["cls"], ".3f"), figure(report["lcp"], ",.0f"), figure(total and total / 1024, ",.0f"),
            ", ".join(low) or "met", "; ".join(audits),
        ])
    return common.table(["page", "performance", "accessibility", "best practices", "SEO", "CLS", "LCP ms",
                         "total KiB", "goal", "audits failed (score < 0.9)"], rows, "lrrrrrrrll")


def report(results: dict) -> None:
    values = {"lighthouse.run": f"`{results['command']}` ({results['when']}, {results['seconds']} s)",
              "lighthouse.tools": results["tools"], "lighthouse.machine": results["machine"],
              "lighthouse.pictures": results["pictures"]}
    missed = []
    for preset in PRESETS:
        reports = results["reports"][preset]
        values[f"lighthouse.{preset}"] = preset_table(reports)
        missed += [f"{name} ({preset}: {', '.join(low)})" for name, report in reports.items()
                   if (low := shortfalls(name, report)[0])]
    pages_measured = len(PRESETS) * len(results["paths"])
    values["lighthouse.met"] = (f"met on all {pages_measured} pages" if not missed
                                else f"not met on {len(missed)} of {pages_measured}: " + "; ".join(missed))
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from bench/out/lighthouse.json")
    arguments = parser.parse_args()
    if not arguments.report_only:
        common.save(RESULTS, measure())
    results = common.load(RESULTS, None)
    if results is None:
        raise SystemExit(f"No results in bench/out/{RESULTS}: run without --report-only first")
    report(results)


if __name__ == "__main__":
    main()
