"""Visitors with a taste the site does not know: does the hybrid list learn it, and how soon can we tell?

    .venv/bin/python bench/simulator.py                      # 2,000 pictures, 20 categories, 5,000 sessions
    .venv/bin/python bench/simulator.py --images 10000 --sessions 20000    # the issue's world
    .venv/bin/python bench/simulator.py --images 200 --categories 5 --sessions 100 --sample 50   # a quick look
    .venv/bin/python bench/simulator.py --report-only        # rewrite the report from bench/out/simulator.json
    .venv/bin/python bench/simulator.py --tune 0.3 0.4       # the demo model's precision@10 at these clutters
    .venv/bin/python bench/simulator.py --time-refresh       # beat's evidence rebuild on the last run's counts

The world (``bench/world.py``): generated pictures in hidden categories, uploaded with the
site's own service (``gallery.services.image_create``) and embedded with its own in-process
path (``similarity.embedding.images_embed_in_batches``, what ``embed_images`` runs), by the
demo model (random weights, seed 0). Only the simulator knows each picture's category.

The site as production runs it: gunicorn with its own configuration and production settings,
PostgreSQL and Redis (the bench's own, under ``.devdata/bench-simulator``), behind one proxy
(``TRUSTED_PROXY_COUNT=1``; each visitor its own ``X-Forwarded-For`` address, so the
per-client limits on choices apply to visitors one by one). The site shows
``--list-size`` similar images (RECOMMENDATIONS_K), compared by interleaving (the default).

A visitor, with a browser's user agent, opens a random picture's page and reads the list
under it from the page's own ``/go/`` links (position, variant, target). It chooses the item
at position i with probability w_i = (p if the item shares the picture's category, q
otherwise) / log2(i + 1), the w_i scaled down only when they sum above 1, and leaves with
the rest; a choice follows the ``/go/`` link (the site counts it) to the chosen picture's
page, where the next step begins, for up to ``--steps`` steps.

Every ``--refresh-every`` sessions the simulator runs what beat runs (the flush,
``clicks.services.events_flush``, then the evidence, ``clicks.evidence.evidence_refresh``),
so the learning does not depend on how fast this machine is. At each checkpoint it asks the
API for the visual and hybrid lists (``?variant=…&k=10``) of a fixed sample of pictures and
of pictures whose list was shown at least 20 times, and reads the site's counts.
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import common
import pages
import world
from common import ROOT, log

DATA_DIR = ROOT / ".devdata" / "bench-simulator"
MEDIA_DIR = DATA_DIR / "media"
RESULTS = "simulator.json"
PLOT_FILE = common.DOCS_DIR / "img" / "simulator.png"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# A /go/ link of a similar-image list: /go/<source>/<position>/[<comparison>/]<variant>/<target>/.
CHOICE_LINK = re.compile(r'href="(/go/(\d+)/(\d+)/(?:\w+/)?(visual|hybrid)/(\d+)/)"')
PRECISION_K = 10
SHOWN_OFTEN = 20  # impressions of a picture's list before it counts as "shown often"
ALPHA = 0.01  # two-sided significance the comparisons must reach
POWER = 0.8
# The goals.
GOAL_PRECISION = 0.9
GOAL_SESSIONS = 20_000
GOAL_RATIO = 5.0


# --- The world on the site ----------------------------------------------------------------------------


def world_load(*, images: int, categories: int, clutter: float) -> dict[int, int]:
    """The pictures uploaded and embedded as the site does it; {image id: hidden category}.

    A world already loaded with the same size, categories and clutter is kept.
    """
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from gallery.models import Image
    from gallery.services import image_create
    from similarity.embedding import images_embed_in_batches

    saved = common.load("simulator-world.json", {})
    wanted = {"images": images, "categories": categories, "clutter": clutter}
    if saved.get("world") == wanted and Image.objects.count() == images and Image.objects.ready().count() == images:
        log(f"world of {images:,} pictures in {categories} categories already loaded")
        return {int(image_id): category for image_id, category in saved["categories"].items()}
    log(f"loading a world of {images:,} pictures in {categories} categories (clutter {clutter}) ...")
    Image.objects.all().delete()
    started = time.perf_counter()
    category_by_id = {}
    for index in range(images):
        data = world.picture_jpeg(index, categories=categories, clutter=clutter)
        upload = SimpleUploadedFile(f"picture-{index + 1}.jpg", data, content_type="image/jpeg")
        with transaction.atomic():
            # No follow-up tasks: the vectors are made below, and the simulation needs no thumbnails.
            image = image_create(upload=upload, caption=f"Picture {index + 1}", enqueue=False)
        category_by_id[image.pk] = world.category_of(index, categories=categories)
    uploaded = time.perf_counter()
    log(f"  uploaded in {uploaded - started:.0f} s; embedding ...")
    result = images_embed_in_batches(image_ids=sorted(category_by_id), batch_size=256)
    if len(result.ready) != images:
        raise SystemExit(f"only {len(result.ready)} of {images} pictures embedded: {result.failed}")
    log(f"  embedded in {time.perf_counter() - uploaded:.0f} s")
    common.save("simulator-world.json", {"world": wanted, "categories": category_by_id,
                                         "load_seconds": round(time.perf_counter() - started)})
    return category_by_id


def clicks_reset(broker_url: str) -> None:
    """No evidence and no counts: every run starts from the visual lists."""
    from clicks.models import PairDay, PairEvidence
    from clicks.recording import event_buffer

    buffer = event_buffer()
    if buffer is not None:
        buffer.client.delete(buffer.key)
    PairDay.objects.all().delete()
    PairEvidence.objects.all().delete()
    pages.cache_flush(broker_url)


# --- Visitors -----------------------------------------------------------------------------------------


@dataclass
class Link:
    position: int
    variant: str
    target: int
    href: str


@dataclass
class Tally:
    """What the visitors did, by their own account (to hold against the site's counts)."""

    lists_read: int = 0
    choices: dict = field(default_factory=lambda: {"visual": 0, "hybrid": 0})
    # Links a visitor had already followed in its session: the site counts a pair once per
    # client and hour (CLICKS_PAIR_RATE).
    repeated: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, other: Tally) -> None:
        with self.lock:
            self.lists_read += other.lists_read
            self.errors += other.errors
            self.repeated += other.repeated
            for variant, count in other.choices.items():
                self.choices[variant] += count


def list_read(html: str, *, source: int) -> list[Link]:
    """The similar-image list of ``source``'s page, in position order, from its links."""
    links = {}
    for href, found_source, position, variant, target in CHOICE_LINK.findall(html):
        if int(found_source) == source:
            links[int(position)] = Link(int(position), variant, int(target), href)
    return [links[position] for position in sorted(links)]


def choice_weights(links: list[Link], *, source_category: int, category_by_id: dict[int, int],
                   same: float, other: float) -> list[float]:
    """w_i = (same or other) / log2(i + 1), scaled down only when they sum above 1."""
    weights = [(same if category_by_id[link.target] == source_category else other) / math.log2(link.position + 1)
               for link in links]
    total = sum(weights)
    return [weight / total for weight in weights] if total > 1 else weights


def session_run(number: int, *, base: str, start: int, category_by_id: dict[int, int], options) -> Tally:
    """One visitor: from ``start``, read, choose or leave, for up to ``options.steps`` steps."""
    import requests

    rng = random.Random(f"{options.seed}:{number}")
    # The address the site's one trusted proxy would have seen: one per visitor.
    address = f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"
    headers = {**pages.HEADERS, "User-Agent": BROWSER, "X-Forwarded-For": address,
               "Accept": "text/html,application/xhtml+xml"}
    tally = Tally()
    followed = set()
    with requests.Session() as session:
        current, path = start, f"/images/{start}/"
        for step in range(options.steps):
            response = session.get(base + path, headers=headers, timeout=60)
            if response.status_code != 200:
                tally.errors += 1
                return tally
            links = list_read(response.text, source=current)
            tally.lists_read += 1
            weights = choice_weights(links, source_category=category_by_id[current], category_by_id=category_by_id,
                                     same=options.same, other=options.other)
            draw, chosen = rng.random(), None
            for link, weight in zip(links, weights):
                if draw < weight:
                    chosen = link
                    break
                draw -= weight
            if chosen is None:
                return tally  # leaves
            response = session.get(base + chosen.href, headers=headers, allow_redirects=False, timeout=60)
            if response.status_code != 302:
                tally.errors += 1
                return tally
            tally.choices[chosen.variant] += 1
            tally.repeated += (current, chosen.target) in followed
            followed.add((current, chosen.target))
            current, path = chosen.target, response.headers["Location"]
    return tally


def sessions_run(first: int, count: int, *, base: str, category_by_id: dict[int, int], options) -> Tally:
    ids = sorted(category_by_id)
    total = Tally()
    starts = [random.Random(f"{options.seed}:start:{n}").choice(ids) for n in range(first, first + count)]
    with ThreadPoolExecutor(options.visitors) as pool:
        for tally in pool.map(lambda item: session_run(item[0], base=base, start=item[1],
                                                       category_by_id=category_by_id, options=options),
                              zip(range(first, first + count), starts)):
            total.add(tally)
    return total


def beat_run() -> dict:
    """What beat runs every few seconds and every minute: the flush, then the evidence."""
    from clicks import evidence, services

    flushed = services.events_flush()
    changed = evidence.evidence_refresh()
    return {"events": flushed.events, "changed_sources": len(changed)}


# --- Measuring ---------------------------------------------------------------------------------------


def lists_fetch(base: str, image_ids: list[int], *, variant: str | None, k: int) -> dict[int, list[tuple[int, str]]]:
    """Each picture's list from the API: [(target, variant that put it there)]."""
    import requests

    query = f"?k={k}" + (f"&variant={variant}" if variant else "")

    def one(image_id):
        with requests.Session() as session:
            response = session.get(f"{base}/api/images/{image_id}/similar/{query}", headers=pages.HEADERS, timeout=60)
            response.raise_for_status()
            return image_id, [(item["id"], item["variant"]) for item in response.json()["similar"]]

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, image_ids))


def precision(lists: dict[int, list[tuple[int, str]]], category_by_id: dict[int, int]) -> float | None:
    """Mean share of a list's first PRECISION_K items in its picture's category."""
    shares = [sum(category_by_id[target] == category_by_id[source] for target, _ in items[:PRECISION_K])
              / PRECISION_K for source, items in lists.items()]
    return round(statistics.fmean(shares), 4) if shares else None


def expected_rates(lists: dict[int, list[tuple[int, str]]], category_by_id: dict[int, int], options) -> dict:
    """Per impression, by the visitors' own model: the chance of a choice, and of a choice
    credited to each variant (what interleaving counts)."""
    choose, credit = [], {"visual": [], "hybrid": []}
    for source, items in lists.items():
        links = [Link(position, variant, target, "") for position, (target, variant) in enumerate(items, start=1)]
        weights = choice_weights(links, source_category=category_by_id[source], category_by_id=category_by_id,
                                 same=options.same, other=options.other)
        choose.append(sum(weights))
        for variant, values in credit.items():
            values.append(sum(w for w, link in zip(weights, links) if link.variant == variant))
    return {"choice": statistics.fmean(choose), **{v: statistics.fmean(values) for v, values in credit.items()}}


def site_counts() -> dict:
    """The site's own counts (after a flush): list impressions and choices by variant, and the
    pictures whose list was shown at least SHOWN_OFTEN times. Only the visitors' pages count
    (the API's lists are never recorded), and every one of them shows the interleaved list."""
    from django.db.models import Sum

    from clicks.models import PairDay

    # Every list has one item at position 1: its impressions are the list's.
    impressions_by_source = dict(PairDay.objects.filter(position=1).values_list("source").annotate(
        shown=Sum("impressions")))
    choices = dict(PairDay.objects.values_list("variant").annotate(chosen=Sum("choices")))
    return {"impressions": sum(impressions_by_source.values()),
            "choices": {variant: choices.get(variant, 0) for variant in ("visual", "hybrid")},
            "shown_often": sorted(source for source, shown in impressions_by_source.items() if shown >= SHOWN_OFTEN)}


def z(quantile: float) -> float:
    return statistics.NormalDist().inv_cdf(quantile)


def impressions_interleaving(*, hybrid: float, visual: float) -> float | None:
    """Impressions for a two-sided sign test on the credited choices (H0: each variant wins half)
    to reach ALPHA with POWER, given each variant's credited choices per impression."""
    decisive = hybrid + visual
    if decisive <= 0 or hybrid == visual:
        return None
    share = hybrid / decisive
    wins = ((z(1 - ALPHA / 2) * 0.5 + z(POWER) * math.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
    return wins / decisive


def impressions_ab(*, hybrid: float, visual: float) -> float | None:
    """Impressions (both arms together) for a two-sided two-proportion z-test of the choice
    rates of whole hybrid and visual lists to reach ALPHA with POWER."""
    if hybrid == visual:
        return None
    mean = (hybrid + visual) / 2
    per_arm = ((z(1 - ALPHA / 2) * math.sqrt(2 * mean * (1 - mean))
                + z(POWER) * math.sqrt(hybrid * (1 - hybrid) + visual * (1 - visual))) / (hybrid - visual)) ** 2
    return 2 * per_arm


def checkpoint(base: str, *, sessions: int, sample: list[int], category_by_id: dict[int, int], options,
               tally: Tally, window: dict, counts: dict) -> dict:
    """Precision of both lists, the site's counts, and what each comparison would need."""
    often_rng = random.Random(f"{options.seed}:often:{sessions}")
    often = counts["shown_often"]
    often_sample = often_rng.sample(often, min(len(often), options.sample))
    lists = {}
    for name, ids in (("sample", sample), ("often", often_sample)):
        for variant in ("visual", "hybrid"):
            lists[(name, variant)] = lists_fetch(base, ids, variant=variant, k=PRECISION_K) if ids else {}
    served = lists_fetch(base, sample, variant=None, k=options.list_size)  # interleaved, as pages show them
    visual_rates = expected_rates({s: items[: options.list_size] for s, items in lists[("sample", "visual")].items()},
                                  category_by_id, options)
    hybrid_rates = expected_rates({s: items[: options.list_size] for s, items in lists[("sample", "hybrid")].items()},
                                  category_by_id, options)
    interleaved_rates = expected_rates(served, category_by_id, options)
    impressions = window["impressions"]
    row = {
        "sessions": sessions,
        "precision": {f"{name}_{variant}": precision(found, category_by_id) for (name, variant), found in lists.items()},
        "shown_often": len(often), "shown_often_sampled": len(often_sample),
        "site": {"impressions": counts["impressions"], "choices": counts["choices"]},
        "simulated": {"lists_read": tally.lists_read, "choices": dict(tally.choices), "repeated": tally.repeated,
                      "errors": tally.errors},
        # Since the last checkpoint, from the site's counts: each variant's credited choices per impression.
        "window": {"impressions": impressions,
                   **{variant: round(window[variant] / impressions, 4) if impressions else None
                      for variant in ("visual", "hybrid")}},
        "model": {"visual_list": round(visual_rates["choice"], 4), "hybrid_list": round(hybrid_rates["choice"], 4),
                  "interleaved_visual": round(interleaved_rates["visual"], 4),
                  "interleaved_hybrid": round(interleaved_rates["hybrid"], 4)},
    }
    if impressions:
        row["needed_interleaving"] = impressions_interleaving(hybrid=row["window"]["hybrid"],
                                                              visual=row["window"]["visual"])
    row["needed_interleaving_model"] = impressions_interleaving(hybrid=interleaved_rates["hybrid"],
                                                                visual=interleaved_rates["visual"])
    row["needed_ab"] = impressions_ab(hybrid=hybrid_rates["choice"], visual=visual_rates["choice"])
    log(f"  {sessions:,} sessions: precision@10 {row['precision']}, shown often {len(often)}, "
        f"window {row['window']}, model {row['model']}, impressions needed: interleaving "
        f"{row.get('needed_interleaving')} (model {row['needed_interleaving_model']}), A/B {row['needed_ab']}")
    return row


# --- One run ------------------------------------------------------------------------------------------


def run(options) -> dict:
    environment = common.django_setup(DATA_DIR, broker=True, MEDIA_ROOT=str(MEDIA_DIR), EMBEDDING_WEIGHTS="random",
                                      EMBEDDING_RANDOM_SEED="0", EMBEDDING_DEVICE="cpu",
                                      RECOMMENDATIONS_K=str(options.list_size))
    broker_url = environment["CELERY_BROKER_URL"]
    started = time.perf_counter()
    category_by_id = world_load(images=options.images, categories=options.categories, clutter=options.clutter)
    loaded = time.perf_counter()
    clicks_reset(broker_url)
    server, port = pages.gunicorn_production(
        broker_url, MEDIA_ROOT=str(MEDIA_DIR), EMBEDDING_WEIGHTS="random", EMBEDDING_RANDOM_SEED="0",
        RECOMMENDATIONS_K=str(options.list_size), TRUSTED_PROXY_COUNT="1", CLICKS_COMPARISON="interleaved")
    base = f"http://127.0.0.1:{port}"
    sample = random.Random(f"{options.seed}:sample").sample(sorted(category_by_id), min(options.sample,
                                                                                      len(category_by_id)))
    every = options.checkpoint_every or max(options.refresh_every, options.sessions // 10)
    result = {"when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(["bench/simulator.py", *sys.argv[1:]]),
              "options": {key: value for key, value in vars(options).items() if key not in ("report_only", "tune")},
              "checkpoints": []}
    connection = common.connect()
    with connection.cursor() as cursor:
        result["machine"] = common.machine_description(cursor)
    connection.close()
    tally = Tally()
    credited = {"impressions": 0, "visual": 0, "hybrid": 0}
    try:
        result["checkpoints"].append(checkpoint(base, sessions=0, sample=sample, category_by_id=category_by_id,
                                                options=options, tally=tally,
                                                window=dict(credited), counts=site_counts()))
        done, simulated_seconds = 0, 0.0
        while done < options.sessions:
            batch = min(options.refresh_every, options.sessions - done)
            batch_started = time.perf_counter()
            tally.add(sessions_run(done, batch, base=base, category_by_id=category_by_id, options=options))
            simulated_seconds += time.perf_counter() - batch_started
            done += batch
            beat = beat_run()
            if done % every == 0 or done == options.sessions:
                counts = site_counts()
                now = {"impressions": counts["impressions"], **counts["choices"]}
                window = {key: now[key] - credited[key] for key in now}
                credited = now
                row = checkpoint(base, sessions=done, sample=sample, category_by_id=category_by_id, options=options,
                                 tally=tally, window=window, counts=counts)
                row["beat"] = beat
                row["session_seconds"] = round(simulated_seconds, 1)
                result["checkpoints"].append(row)
                common.save(RESULTS, result)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not options.keep_server:
            common.servers_stop(DATA_DIR)
    result["load_seconds"] = round(loaded - started)
    result["seconds"] = round(time.perf_counter() - started)
    common.save(RESULTS, result)
    return result


def tune(clutters: list[float], options) -> None:
    """The demo model's exact precision@10 in worlds of these clutters (no site: the encoder
    the workers load, on the pictures in memory)."""
    import numpy as np

    common.django_setup(DATA_DIR, EMBEDDING_WEIGHTS="random", EMBEDDING_RANDOM_SEED="0", EMBEDDING_DEVICE="cpu")
    from similarity.encoders.registry import get_encoder

    encoder = get_encoder()
    labels = np.array([world.category_of(i, categories=options.categories) for i in range(options.images)])
    try:
        for clutter in clutters:
            pictures = [world.picture(i, categories=options.categories, clutter=clutter) for i in range(options.images)]
            vectors = np.concatenate([encoder.embed(pictures[s : s + 64]) for s in range(0, len(pictures), 64)])
            log(f"clutter {clutter}: precision@10 {world.precision_at_k(vectors, labels):.3f}")
    finally:
        common.servers_stop(DATA_DIR)


def refresh_time(repeats: int = 3) -> dict:
    """What beat's evidence rebuild (``clicks.evidence.evidence_refresh``, every
    CLICKS_EVIDENCE_SECONDS) costs on the counts the last run left: links included, each
    rebuild reads every retained day again. Added to that run's results."""
    result = common.load(RESULTS, None)
    if result is None:
        raise SystemExit(f"No results in bench/out/{RESULTS}: run the simulator first.")
    common.django_setup(DATA_DIR, broker=True, MEDIA_ROOT=str(MEDIA_DIR))
    from django.conf import settings

    from clicks import evidence
    from clicks.models import PairDay, PairEvidence

    try:
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            evidence.evidence_refresh()
            seconds.append(round(time.perf_counter() - started, 2))
        result["refresh"] = {
            "seconds": seconds, "pair_days": PairDay.objects.count(), "pairs": PairEvidence.objects.count(),
            "linked": PairEvidence.objects.filter(links__gte=settings.CLICKS_MIN_LINKS).count(),
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
    finally:
        common.servers_stop(DATA_DIR)
    log(f"evidence rebuild: {result['refresh']}")
    common.save(RESULTS, result)
    return result


# --- The report: "Learning from visitors: the simulator" in docs/benchmarks.md -------------------------


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def report(result: dict) -> None:
    options, rows = result["options"], result["checkpoints"]
    first, last = rows[0], rows[-1]
    table_rows = []
    for row in rows:
        p = row["precision"]
        table_rows.append([
            f"{row['sessions']:,}", _share(p["sample_visual"]), _share(p["sample_hybrid"]),
            f"{row['shown_often']:,}", _share(p.get("often_visual")), _share(p.get("often_hybrid")),
            _share(row["window"]["visual"]), _share(row["window"]["hybrid"]),
            _count(row.get("needed_interleaving")), _count(row["needed_interleaving_model"]), _count(row["needed_ab"]),
        ])
    headers = ["sessions", "precision@10, visual (sample)", "hybrid (sample)", "pictures shown ≥ 20 times",
               "visual (shown ≥ 20)", "hybrid (shown ≥ 20)", "choices per impression, visual items",
               "hybrid items", "impressions needed: interleaving (counted rates)", "interleaving (model)",
               "A/B split (model)"]
    p = last["precision"]
    ab, interleaving = last["needed_ab"], last.get("needed_interleaving")
    ratio = ab / interleaving if ab and interleaving else None
    site, simulated = last["site"], last["simulated"]
    machine = result["machine"]
    values = {
        "simulator.world": (f"{options['images']:,} pictures in {options['categories']} hidden categories "
                            f"(clutter {options['clutter']}), {options['sessions']:,} sessions of up to "
                            f"{options['steps']} steps, p = {options['same']}, q = {options['other']}, lists of "
                            f"{options['list_size']}, the flush and the evidence every {options['refresh_every']} "
                            f"sessions, {options['visitors']} visitors at a time"),
        "simulator.baseline": _share(first["precision"]["sample_visual"]),
        "simulator.table": common.table(headers, table_rows, align="rrrrrrrrrrr"),
        "simulator.counted": (f"{simulated['lists_read']:,} lists read and {sum(simulated['choices'].values()):,} "
                              f"links followed by the visitors; the site counted {site['impressions']:,} impressions "
                              f"and {sum(site['choices'].values()):,} choices; the visitors followed "
                              f"{simulated.get('repeated', 0):,} links a second time in a session, which the site "
                              f"counts once per client and hour (`CLICKS_PAIR_RATE`); {simulated['errors']} errors"),
        "simulator.goal_precision": (f"{_share(p.get('often_hybrid'))} for the {last['shown_often']:,} pictures shown "
                                     f"at least 20 times after {last['sessions']:,} sessions (visual: "
                                     f"{_share(p.get('often_visual'))}; baseline {_share(first['precision']['sample_visual'])})"),
        "simulator.goal_ratio": (f"interleaving {_count(interleaving)} impressions, the A/B split {_count(ab)}: "
                                 + ("—" if ratio is None else f"{ratio:.1f}×")),
        "simulator.duration": (f"{result['seconds'] / 60:.0f} minutes ({result['load_seconds'] / 60:.0f} loading the "
                               f"world, {last.get('session_seconds', 0) / 60:.0f} browsing)"),
        "simulator.machine": (f"{machine['cpu']}, {machine['cores']} cores; PostgreSQL {machine['postgresql']} with "
                              f"pgvector {machine['pgvector']}; Python {machine['python']}"),
        "simulator.runs": f"`{result['command']}` ({result['when']})",
        "simulator.clutter": f"{options['clutter']}",
        # This run's rates scaled to the world: loading is per picture, browsing per session.
        "simulator.full": ("This run is that world" if options["images"] >= 10_000 and options["sessions"] >= 20_000
                           else f"At this run's rates, loading 10,000 pictures would take about "
                           f"{result['load_seconds'] / options['images'] * 10_000 / 60:.0f} minutes here and 20,000 "
                           f"sessions about {last.get('session_seconds', 0) / options['sessions'] * 20_000 / 60:.0f} "
                           f"more, with the checkpoints on top"),
    }
    refresh = result.get("refresh")
    if refresh:
        values["simulator.refresh"] = (
            f"{min(refresh['seconds']):.1f}–{max(refresh['seconds']):.1f} s for {refresh['pair_days']:,} daily rows "
            f"giving {refresh['pairs']:,} pairs, {refresh['linked']:,} of them linked ({refresh['when']})"
        )
    plot(result)
    common.fill(common.DOCS_DIR / "benchmarks.md", values, others=("",))


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["checkpoints"]
    sessions = [row["sessions"] for row in rows]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    for key, label, style in (("sample_visual", "visual, sample", "C0--"), ("sample_hybrid", "hybrid, sample", "C1--"),
                              ("often_visual", "visual, shown ≥ 20 times", "C0-"),
                              ("often_hybrid", "hybrid, shown ≥ 20 times", "C1-")):
        points = [(s, row["precision"].get(key)) for s, row in zip(sessions, rows) if row["precision"].get(key) is not None]
        if points:
            left.plot(*zip(*points), style, marker="o", markersize=3, label=label)
    left.axhline(GOAL_PRECISION, color="red", linewidth=1, linestyle=":")
    left.set(xlabel="sessions", ylabel="precision@10 by hidden category", ylim=(0, 1.02),
             title="Do the lists learn the hidden categories?")
    left.legend(fontsize=8)
    for variant, colour in (("visual", "C0"), ("hybrid", "C1")):
        points = [(s, row["window"][variant]) for s, row in zip(sessions, rows) if row["window"][variant] is not None]
        if points:
            middle.plot(*zip(*points), color=colour, marker="o", markersize=3, label=f"{variant} items (counted)")
    middle.set(xlabel="sessions", ylabel="choices per impression", title="Choices credited to each variant")
    middle.legend(fontsize=8)
    for key, label, colour in (("needed_interleaving", "interleaving (counted rates)", "C2"),
                               ("needed_interleaving_model", "interleaving (model)", "C2--"),
                               ("needed_ab", "A/B split (model)", "C3")):
        points = [(s, row.get(key)) for s, row in zip(sessions, rows) if row.get(key)]
        if points:
            right.plot(*zip(*points), colour, marker="o", markersize=3, label=label)
    right.set_yscale("log")
    right.set(xlabel="sessions", ylabel=f"impressions to detect at p < {ALPHA} (power {POWER})",
              title="How soon each comparison can tell")
    right.legend(fontsize=8)
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
    options = result["options"]
    figure.suptitle(f"{options['images']:,} pictures in {options['categories']} hidden categories, "
                    f"{options['sessions']:,} simulated sessions", fontsize=10)
    figure.tight_layout()
    figure.savefig(PLOT_FILE, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--clutter", type=float, default=world.WORLD_CLUTTER)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=5, help="most lists one visitor reads")
    parser.add_argument("--same", type=float, default=0.5, help="p: choosing an item of the picture's category")
    parser.add_argument("--other", type=float, default=0.05, help="q: choosing any other item")
    parser.add_argument("--list-size", type=int, default=10, help="the similar images a page shows")
    parser.add_argument("--visitors", type=int, default=4, help="sessions at a time")
    parser.add_argument("--refresh-every", type=int, default=100, help="sessions between flush + evidence runs")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="sessions between measures (default: a tenth)")
    parser.add_argument("--sample", type=int, default=200, help="pictures whose lists each checkpoint measures")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--keep-server", action="store_true", help="leave PostgreSQL and Redis running")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--tune", type=float, nargs="+", metavar="CLUTTER")
    parser.add_argument("--time-refresh", action="store_true", help="time the evidence rebuild on the last run's counts")
    options = parser.parse_args()
    if options.tune:
        tune(options.tune, options)
        return
    if options.time_refresh:
        report(refresh_time())
        return
    result = common.load(RESULTS, None) if options.report_only else run(options)
    if result is None:
        raise SystemExit(f"No results in bench/out/{RESULTS}: run without --report-only first.")
    report(result)


if __name__ == "__main__":
    main()
