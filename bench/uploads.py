"""Uploading a folder: the admin's upload page in Chromium against ``manage.py import_images``.

    .venv/bin/python bench/uploads.py [--photos 2000] [--rounds 2] [--ways command,page,api]
    .venv/bin/python bench/uploads.py --prepare-only      # generate the folder (kept for later runs)
    .venv/bin/python bench/uploads.py --report-only

One folder, generated once under ``.devdata/bench-uploads/files`` and kept: photo-sized JPEGs
(3000x2000, q90, about 1.5 MB: ingest.py's synthetic photos), of which 1 % broken (half of them
truncated JPEGs, half not images at all) and 5 % already in the gallery before each measured
run. Its own embedded PostgreSQL and Redis under ``.devdata/bench-uploads``; gunicorn with the
site's configuration and production settings on loopback, serving TLS itself (production
settings redirect plain HTTP and check a POST's Origin). Each round runs every way in turn (the
order reversed from one round to the next), each on a gallery reset to the same start (empty,
then the 5 % added through the import service, not timed):

- command: ``manage.py import_images <folder>`` in its own process, timed from its start to
  its exit (Django's start-up included, as an admin running it waits for it);
- page: headless Chromium (Debian's ``chromium`` under Playwright, as the browser tests run
  it), signed in as staff, the folder given to the page's folder picker, timed from the pick to
  the page showing 100 % with every file's row settled. Every request the page sends is
  recorded (Playwright's request events): the upload requests' body sizes, and which file each
  carried (the name its answer gives back);
- api: a script through the same endpoints, signed in with a session as the page is: hashes,
  one bulk check, then each file the gallery lacks in its own request, UPLOAD_CONCURRENCY at a
  time. The server's work without a browser's.

Beside each timing, the CPU time each part spent (the command or gunicorn, Chromium or the
script, PostgreSQL, Playwright's driver, everything else on the machine). No Celery worker runs
during either timing: the follow-up tasks (embeddings, thumbnails) both ways queue are purged
after each, so both timings are the web side only, the same way. Runs accumulate in
``bench/out/uploads-runs.json``; the latest fills the section "Uploading a folder from the
browser" of docs/ingestion.md and draws docs/img/uploads.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import common
from common import ROOT, log

DATA_DIR = ROOT / ".devdata" / "bench-uploads"
FILES_DIR, MEDIA_DIR = DATA_DIR / "files", DATA_DIR / "media"
DOCS_FILE, PLOT_FILE = common.DOCS_DIR / "ingestion.md", common.DOCS_DIR / "img" / "uploads.png"
PHOTO_SIZE, JPEG_QUALITY = (3000, 2000), 90
GOAL_RATIO = 0.8
SEED_BASE = 2_000_003  # other seeds than ingest.py's photos: a folder of its own


# --- The folder -------------------------------------------------------------------------------


def photo_bytes(seed: int) -> bytes:
    """One synthetic photo as ingest.py draws them: smooth colour fields and shapes drawn at a
    quarter size, enlarged, with per-pixel grain (what makes a camera JPEG weigh 1-2 MB)."""
    import io

    import numpy as np
    from PIL import Image

    from imaging import synthetic_photo

    base = synthetic_photo(SEED_BASE + seed, (PHOTO_SIZE[0] // 4, PHOTO_SIZE[1] // 4))
    pixels = np.asarray(base.resize(PHOTO_SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
    pixels += np.random.default_rng(SEED_BASE + seed).integers(-10, 11, size=pixels.shape, dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def kind_of(index: int) -> str:
    """What the ``index``-th file of the folder is: "photo", "known" (a photo the gallery holds
    before the run), "truncated" or "not-image". 1 % broken and 5 % known, spread through the
    folder (the page meets them among the others), and the same whatever the folder's size."""
    if index % 100 == 50:
        return "truncated" if index % 200 == 50 else "not-image"
    return "known" if index % 20 == 0 else "photo"


def file_make(index: int) -> None:
    kind = kind_of(index)
    if kind == "not-image":
        # What a camera folder also holds under a picture's name: a text note, or other bytes.
        data = (b"Not a picture: a sidecar note saved under a .jpg name.\n" * 40 if index % 400 == 150
                else random_bytes(index, 200_000))
    else:
        data = photo_bytes(index)
        if kind == "truncated":  # a copy cut off half-way, as an interrupted transfer leaves one
            data = data[: len(data) // 2]
    path = FILES_DIR / file_name(index)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.rename(path)


def random_bytes(seed: int, size: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).bytes(size)


def file_name(index: int) -> str:
    return f"IMG_{index:05d}.jpg"


def index_of(name: str) -> int:
    return int(name.removeprefix("IMG_").removesuffix(".jpg"))


def folder_ensure(count: int) -> Path:
    """The folder of the first ``count`` files: hard links into the files generated once (and
    kept) under FILES_DIR, so runs of different sizes share them."""
    FILES_DIR.mkdir(parents=True, exist_ok=True)
    missing = [index for index in range(count) if not (FILES_DIR / file_name(index)).exists()]
    if missing:
        log(f"Generating {len(missing)} file(s) under {FILES_DIR.relative_to(ROOT)} (kept for later runs) ...")
        with Pool(os.cpu_count()) as pool:
            pool.map(file_make, missing, chunksize=4)
    folder = DATA_DIR / f"folder-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index in range(count):
        os.link(FILES_DIR / file_name(index), folder / file_name(index))
    return folder


def folder_facts(folder: Path) -> dict:
    """Bytes of the folder by kind, and the known photos' names (the gallery holds them before a run)."""
    sizes = {path.name: path.stat().st_size for path in folder.iterdir()}
    kinds = {name: kind_of(index_of(name)) for name in sizes}
    return {
        "files": len(sizes), "bytes": sum(sizes.values()),
        "by_kind": {kind: {"files": sum(k == kind for k in kinds.values()),
                           "bytes": sum(sizes[n] for n, k in kinds.items() if k == kind)}
                    for kind in ("photo", "known", "truncated", "not-image")},
        "known_names": sorted(name for name, kind in kinds.items() if kind == "known"),
        "sizes": sizes,
    }


# --- Servers, the gallery, the staff user ---------------------------------------------------


def production_environment(broker_url: str) -> dict:
    """What gunicorn and the command run with: production settings, the bench's servers, as
    pages.gunicorn_production sets them; the host names the browser and the checks use."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "IMAGEREC_"))}
    environment.update(DJANGO_SETTINGS_MODULE="imagerec.settings.production", SECRET_KEY="bench-" + "x" * 40,
                       DEBUG="false", ALLOWED_HOSTS="bench.example,127.0.0.1", DATABASE_URL=os.environ["DATABASE_URL"],
                       CELERY_BROKER_URL=broker_url, METRICS_PUBLIC="true", MEDIA_ROOT=str(MEDIA_DIR),
                       STATIC_ROOT=str(DATA_DIR / "static"))
    return environment


def certificate() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made once. Production settings redirect plain
    HTTP and check a POST's Origin against the HTTPS address, so the browser talks HTTPS to
    gunicorn itself (no proxy in between): the encryption is part of both the page's cost and
    the deployment's (there, in the proxy)."""
    cert, key = DATA_DIR / "tls-cert.pem", DATA_DIR / "tls-key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                        str(cert)], check=True, capture_output=True)
    return cert, key


def certificate_spki() -> str:
    """The certificate's public key hash, for Chromium to trust it (``--ignore-certificate-errors-spki-list``)."""
    import base64
    import hashlib

    der = subprocess.run(["openssl", "x509", "-in", str(certificate()[0]), "-pubkey", "-noout"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der, check=True,
                         capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def chromium_launch(playwright):
    """Debian's Chromium as the browser tests start it, trusting the bench's certificate."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium"), args=[
        *CHROMIUM_ARGUMENTS, f"--ignore-certificate-errors-spki-list={certificate_spki()}"])


def gunicorn_start(environment: dict) -> tuple[subprocess.Popen, int]:
    """gunicorn with the site's configuration (imagerec/gunicorn.py: its worker count, timeouts),
    over TLS on loopback; returns once it answers."""
    import ssl
    import urllib.request

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=environment,
                   check=True)
    cert, key = certificate()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--config", "python:imagerec.gunicorn",
         "--certfile", str(cert), "--keyfile", str(key), "imagerec.wsgi"],
        cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,  # the access log, as a platform would take it
    )
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=10).read()
            return process, port
        except OSError as error:
            if process.poll() is not None or time.monotonic() > deadline or hasattr(error, "code"):
                process.kill()
                raise RuntimeError(f"gunicorn did not serve the site: {error}") from None
            time.sleep(0.3)


STAFF = ("bench-uploader", "bench-uploader-password")


def staff_ensure() -> tuple[str, str]:
    """A staff member who may add, view and change images (what the upload page and its API
    require), not a superuser."""
    from django.contrib.auth.models import Permission, User

    user, _ = User.objects.get_or_create(username=STAFF[0], defaults={"is_staff": True})
    user.is_staff = True
    user.set_password(STAFF[1])
    user.save()
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="gallery", content_type__model="image",
        codename__in=["add_image", "view_image", "change_image"]))
    return STAFF


def gallery_reset(folder: Path, known: list[str]) -> None:
    """The same start for every way: no images, no media, no queued tasks; then the known
    photos added through the import service (not timed)."""
    from devtools.workers import purge_queues
    from gallery.models import Image, Tag
    from gallery.services import image_import_file

    Image.objects.all().delete()
    Tag.objects.all().delete()
    shutil.rmtree(MEDIA_DIR, ignore_errors=True)
    MEDIA_DIR.mkdir(parents=True)
    for name in known:
        outcome = image_import_file(path=folder / name)
        assert outcome.status == "added", (name, outcome)
    purge_queues()


def gallery_check(facts: dict) -> dict:
    """What the gallery holds after a way: every good photo once, nothing of the broken files."""
    from gallery.models import Image

    names = set(Image.objects.values_list("original_name", flat=True))
    expected = {name for name in facts["sizes"] if kind_of(index_of(name)) in ("photo", "known")}
    return {"images": len(names), "expected": len(expected), "missing": sorted(expected - {Path(n).name for n in names})[:10]}


# --- CPU --------------------------------------------------------------------------------------


def cpu_of(pids: list[int]) -> float:
    """User + system seconds of these processes and their live descendants, and of the children
    they have reaped."""
    return sum(common.tree_cpu_seconds(pid) for pid in pids)


def postgres_pid() -> int:
    return int((DATA_DIR / "postgres" / "postmaster.pid").read_text().split()[0])


def machine_busy_seconds() -> float:
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


# --- The three ways -------------------------------------------------------------------------


def way_command(folder: Path, environment: dict) -> dict:
    """``manage.py import_images <folder>`` in a process of its own, start to exit."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    postgres, busy = cpu_of([postgres_pid()]), machine_busy_seconds()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", "import_images", str(folder)], cwd=ROOT, env=environment,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"import_images failed: {done.stderr[-2000:]}")
    command_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    postgres = cpu_of([postgres_pid()]) - postgres
    return {"seconds": seconds, "summary": done.stdout.strip().splitlines()[0],
            "cpu_seconds": {"command": command_cpu, "postgres": postgres,
                            "other": max(0.0, machine_busy_seconds() - busy - command_cpu - postgres)}}


def command_start(environment: dict) -> dict:
    """The command's own start-up (Python, Django, the settings' checks) on an empty folder:
    part of its time that does not grow with the folder."""
    empty = DATA_DIR / "empty-folder"
    empty.mkdir(exist_ok=True)
    measured = way_command(empty, environment)
    return {"seconds": measured["seconds"], "cpu_seconds": measured["cpu_seconds"]["command"]}


# What the browser tests pass to Chromium (tests/browser/conftest.py): headless, no sandbox (the
# bench may run as root), no GPU, none of its background calls home.
CHROMIUM_ARGUMENTS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UPLOAD_PATH, CHECK_PATH = "/api/uploads/", "/api/uploads/check/"


def chromium_pids() -> list[int]:
    """This process's Chromium processes (under Playwright's driver)."""
    import psutil

    return [process.pid for process in psutil.Process().children(recursive=True)
            if "chrom" in process.name().lower() and process.parent() and "chrom" not in process.parent().name().lower()]


def driver_pids() -> list[int]:
    """Playwright's driver (a Node.js process this one started): its CPU is the harness's, not the page's."""
    import psutil

    return [process.pid for process in psutil.Process().children() if process.name().startswith("node")]


def way_page_recorded(folder: Path, *, port: int, gunicorn_pid: int, facts: dict,
                      credentials: tuple[str, str]) -> dict:
    """The admin's upload page in headless Chromium under Playwright the whole time: signed in,
    the folder picked, timed until the page shows 100 % with every file's row, every request
    recorded (what was sent, and which file each carried). Playwright's driver handles every
    request's events meanwhile, on the same cores: way_page times the page without it."""
    from playwright.sync_api import sync_playwright

    base = f"https://127.0.0.1:{port}"
    with sync_playwright() as playwright:
        browser = chromium_launch(playwright)
        try:
            context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
            context.set_default_timeout(60_000)
            page = context.new_page()
            errors, sent = [], []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"/admin/login/?next={PAGE_PATH}")
            page.fill("#id_username", credentials[0])
            page.fill("#id_password", credentials[1])
            page.click("input[type=submit]")
            page.wait_for_url(f"**{PAGE_PATH}")
            page.on("request", lambda request: request.method == "POST" and request.url.startswith(base + "/api/uploads")
                    and sent.append(request))
            others = []
            page.on("request", lambda request: not request.url.startswith(base + "/api/uploads")
                    and others.append(f"{request.method} {request.url[len(base):].split('?')[0]}"))
            parts = {"gunicorn": [gunicorn_pid], "postgres": [postgres_pid()], "chromium": chromium_pids(),
                     "playwright": driver_pids()}
            cpu, busy = {name: cpu_of(pids) for name, pids in parts.items()}, machine_busy_seconds()
            started = time.perf_counter()
            page_pick_folder(page, folder)
            page_wait_done(page, facts["files"], timeout_s=1800)
            seconds = time.perf_counter() - started
            cpu = {name: cpu_of(pids) - cpu[name] for name, pids in parts.items()}
            cpu["other"] = max(0.0, machine_busy_seconds() - busy - sum(cpu.values()))
            screenshot = DATA_DIR / "page-done.png"
            page.screenshot(path=str(screenshot), full_page=False)
            rows = page_rows(page)
            requests = requests_sent(sent, facts)
        finally:
            browser.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "errors": errors[:10], "rows": rows,
            "other_requests": len(others), "other_requests_sample": others[:5], **requests}


def chromium_start() -> tuple[subprocess.Popen, str]:
    """Chromium started on its own, as the browser tests' arguments have it, with a DevTools port
    for Playwright to attach to and let go of; returns it and the port's address."""
    import urllib.request

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    profile = DATA_DIR / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    process = subprocess.Popen(
        [shutil.which("chromium"), *CHROMIUM_ARGUMENTS, f"--ignore-certificate-errors-spki-list={certificate_spki()}",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(address + "/json/version", timeout=5).read()
            return process, address
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("Chromium did not open its DevTools port") from None
            time.sleep(0.2)


# Set in the page before the pick: the page's own clock at the pick and when it shows 100 % with
# every row settled, checked every 100 ms (in the page: no harness attached meanwhile).
WATCH_SCRIPT = """([selector, settled, files]) => {
  window.benchStarted = performance.now();
  window.benchDone = null;
  const timer = setInterval(() => {
    const progress = document.querySelector('#bulk-overall');
    if (!progress || Number(progress.value) < Number(progress.max)) return;
    let done = 0;
    for (const row of document.querySelectorAll(selector)) {
      if (settled.some((state) => row.classList.contains('outcome-' + state))) done += 1;
    }
    if (done >= files) {
      window.benchDone = performance.now();
      clearInterval(timer);
    }
  }, 100);
}"""


def way_page(folder: Path, *, port: int, gunicorn_pid: int, facts: dict, credentials: tuple[str, str]) -> dict:
    """The admin's upload page in headless Chromium, as a person uses it: Playwright signs in and
    picks the folder, then lets go of the browser (its driver would otherwise handle every
    request's DevTools events on the same cores: about as much CPU as Chromium itself). The page
    times itself (performance.now() at the pick and at 100 % with every row settled); the
    server's side says when to look again: every good photo in the gallery."""
    from playwright.sync_api import sync_playwright

    from gallery.models import Image

    base = f"https://127.0.0.1:{port}"
    chromium, address = chromium_start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.connect_over_cdp(address)
            page = browser.contexts[0].pages[0]
            page.set_default_timeout(60_000)
            page.goto(f"{base}/admin/login/?next={PAGE_PATH}")
            page.fill("#id_username", credentials[0])
            page.fill("#id_password", credentials[1])
            page.click("input[type=submit]")
            page.wait_for_url(f"**{PAGE_PATH}")
            page.evaluate(WATCH_SCRIPT, [ROWS, list(SETTLED), facts["files"]])
            parts = {"gunicorn": [gunicorn_pid], "postgres": [postgres_pid()], "chromium": [chromium.pid]}
            cpu, busy = {name: cpu_of(pids) for name, pids in parts.items()}, machine_busy_seconds()
            page_pick_folder(page, folder)
            browser.close()  # attached over CDP: lets go of the browser, which goes on
        expected = gallery_check(facts)["expected"]
        deadline = time.monotonic() + 1800
        while Image.objects.count() < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        cpu = {name: cpu_of(pids) - cpu[name] for name, pids in parts.items()}
        cpu["other"] = max(0.0, machine_busy_seconds() - busy - sum(cpu.values()))
        with sync_playwright() as playwright:
            browser = playwright.chromium.connect_over_cdp(address)
            page = browser.contexts[0].pages[0]
            page.wait_for_function("window.benchDone !== null", timeout=300_000, polling=500)
            seconds = page.evaluate("(window.benchDone - window.benchStarted) / 1000")
            page.screenshot(path=str(DATA_DIR / "page-done.png"))
            rows = page_rows(page)
            browser.close()
    finally:
        chromium.terminate()
        chromium.wait(timeout=30)
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows}


def requests_sent(sent: list, facts: dict) -> dict:
    """What the browser sent, from Playwright's record of each request: bodies' bytes (the
    Content-Length Chromium put on the wire: Playwright's own body size is 0 for a body read
    from files), and which files the upload requests carried (the name each answer gives back)."""
    upload_bytes, check_bytes, carried, statuses = 0, 0, [], {}
    for request in sent:
        size = int(request.all_headers().get("content-length") or 0)
        response = request.response()
        status = response.status if response else None
        if request.url.endswith(CHECK_PATH):
            check_bytes += size
            continue
        upload_bytes += size
        statuses[status] = statuses.get(status, 0) + 1
        # A refusal's answer is the API's error shape, without the name: only broken files get one.
        carried.append(Path(response.json()["name"]).name if status in (200, 201) else None)
    known = set(facts["known_names"])
    sent_known = sorted(name for name in carried if name in known)
    return {"upload_requests": sum(statuses.values()), "check_requests": len(sent) - sum(statuses.values()),
            "upload_body_bytes": upload_bytes, "check_body_bytes": check_bytes, "statuses": statuses,
            "known_sent": sent_known, "unnamed_answers": carried.count(None),
            "distinct_files_sent": len(set(carried) - {None}),
            "sent_files_bytes": sum(facts["sizes"].get(name, 0) for name in set(carried) - {None})}


def session_signed_in(origin: str, context, credentials: tuple[str, str]) -> dict:
    """The headers of a signed-in session, as the page sends them: the session and CSRF cookies,
    the token in ``X-CSRFToken`` and the page's origin. (HTTP Basic authentication would check
    the password on every request: PBKDF2, about 200 ms of CPU each, more than the upload.)"""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                         urllib.request.HTTPCookieProcessor(cookies))
    login = f"{origin}/admin/login/?next={PAGE_PATH}"
    form = opener.open(login).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    opener.open(urllib.request.Request(login, data=urllib.parse.urlencode({
        "csrfmiddlewaretoken": token, "username": credentials[0], "password": credentials[1], "next": PAGE_PATH,
    }).encode(), headers={"Referer": login, "Origin": origin})).read()
    jar = {cookie.name: cookie.value for cookie in cookies}
    assert "sessionid" in jar, "signing in failed"
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in jar.items()), "X-CSRFToken": jar["csrftoken"],
            "Origin": origin, "Referer": origin + PAGE_PATH}


def way_api(folder: Path, *, port: int, gunicorn_pid: int, facts: dict, credentials: tuple[str, str],
            concurrency: int = 4) -> dict:
    """The same API the page uses, from a script: hash every file, one bulk check, then each
    unknown file in its own request, ``concurrency`` at a time, signed in as the page is (a
    session). What the page could reach without a browser's costs."""
    import hashlib
    import http.client
    import json
    import ssl
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings

    context = ssl.create_default_context(cafile=str(certificate()[0]))
    origin = f"https://127.0.0.1:{port}"
    session = session_signed_in(origin, context, credentials)

    def post(connection, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
        connection.request("POST", path, body=body, headers={**session, "Content-Type": content_type})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    parts = {"gunicorn": [gunicorn_pid], "postgres": [postgres_pid()]}
    cpu, busy = {name: cpu_of(pids) for name, pids in parts.items()}, machine_busy_seconds()
    script_cpu = time.process_time()
    started = time.perf_counter()
    names = sorted(facts["sizes"])
    hashes = {}
    for name in names:
        with open(folder / name, "rb") as handle:
            hashes[name] = hashlib.file_digest(handle, "sha256").hexdigest()
    hashed = time.perf_counter() - started
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
    known, check_bytes = set(), 0
    for first in range(0, len(names), settings.UPLOAD_CHECK_MAX):
        body = json.dumps({"sha256": [hashes[n] for n in names[first: first + settings.UPLOAD_CHECK_MAX]]}).encode()
        check_bytes += len(body)
        status, answer = post(connection, CHECK_PATH, body, "application/json")
        assert status == 200, (status, answer)
        known |= {entry["sha256"] for entry in answer["known"]}
    connection.close()
    to_send = [name for name in names if hashes[name] not in known]
    local = threading.local()

    def send(name: str) -> tuple[str, int, int]:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        boundary = "bench" + hashes[name][:24]
        body = b"".join([
            f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n{name}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f'Content-Type: image/jpeg\r\n\r\n'.encode(), (folder / name).read_bytes(), f"\r\n--{boundary}--\r\n".encode()])
        status, _ = post(local.connection, UPLOAD_PATH, body, f"multipart/form-data; boundary={boundary}")
        return name, status, len(body)

    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(send, to_send))
    seconds = time.perf_counter() - started
    cpu = {name: cpu_of(pids) - cpu[name] for name, pids in parts.items()}
    cpu["client"] = time.process_time() - script_cpu
    cpu["other"] = max(0.0, machine_busy_seconds() - busy - sum(cpu.values()))
    statuses = {}
    for _, status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    carried = {name for name, _, _ in answers}
    return {"seconds": seconds, "hash_seconds": hashed, "cpu_seconds": cpu, "upload_requests": len(answers),
            "check_requests": -(-len(names) // settings.UPLOAD_CHECK_MAX), "check_body_bytes": check_bytes,
            "upload_body_bytes": sum(size for _, _, size in answers), "statuses": statuses,
            "known_sent": sorted(carried & set(facts["known_names"])), "distinct_files_sent": len(carried),
            "sent_files_bytes": sum(facts["sizes"][name] for name in carried)}


# --- The page ---------------------------------------------------------------------------------

PAGE_PATH = "/admin/gallery/image/add/"


def page_pick_folder(page, folder: Path) -> None:
    """The folder given to the page's "Choose a folder…" picker (the script makes it a directory
    picker), as a person choosing it would."""
    page.set_input_files("#bulk-folder", folder)


# The page's own signs (templates/admin/gallery/image/upload.html, static/js/admin-upload.js): the
# overall <progress> at its maximum, and a row per file in the results table, each marked with
# its outcome once its answer (or the bulk check's) came back.
ROWS = ".bulk-results .results-group [role=row]"
SETTLED = ("added", "duplicate", "refused", "failed", "archive", "cancelled")
DONE_SCRIPT = """([selector, settled, files]) => {
  const progress = document.querySelector('#bulk-overall');
  if (!progress || Number(progress.value) < Number(progress.max)) return false;
  let done = 0;
  for (const row of document.querySelectorAll(selector)) {
    if (settled.some((state) => row.classList.contains('outcome-' + state))) done += 1;
  }
  return done >= files ? done : false;
}"""


def page_wait_done(page, files: int, *, timeout_s: float) -> None:
    page.wait_for_function(DONE_SCRIPT, arg=[ROWS, list(SETTLED), files], timeout=timeout_s * 1000, polling=200)


def page_rows(page) -> dict:
    """The results table's rows by outcome, as the page shows them."""
    return page.evaluate("""(selector) => {
      const counts = {};
      for (const row of document.querySelectorAll(selector)) {
        const outcome = [...row.classList].find((name) => name.startsWith('outcome-')) || 'outcome-none';
        counts[outcome.slice(8)] = (counts[outcome.slice(8)] || 0) + 1;
      }
      return counts;
    }""", ROWS)


HASH_SCRIPT = """async ([megabytes, photoBytes]) => {
  const data = new Uint8Array(photoBytes);
  for (let i = 0; i < data.length; i += 4096) data[i] = i & 255;
  const rounds = Math.max(1, Math.round(megabytes * 1e6 / photoBytes));
  const started = performance.now();
  for (let i = 0; i < rounds; i++) await crypto.subtle.digest('SHA-256', data);
  return (performance.now() - started) / rounds;
}"""


def browser_hash_ms(port: int, photo_bytes_mean: int) -> float:
    """Web Crypto's SHA-256 of one photo's bytes in this Chromium, in milliseconds (the page
    hashes every file before asking which the gallery holds)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = chromium_launch(playwright)
        try:
            page = browser.new_context().new_page()
            page.goto(f"https://127.0.0.1:{port}/healthz")  # a secure context: Web Crypto needs one
            page.evaluate(HASH_SCRIPT, [64, photo_bytes_mean])
            return statistics.median(page.evaluate(HASH_SCRIPT, [256, photo_bytes_mean]) for _ in range(3))
        finally:
            browser.close()


def loopback_gbps(megabytes: int = 2048) -> float:
    """Plain TCP over loopback between two processes, gigabytes per second: the wire's ceiling."""
    import multiprocessing

    def receive(listener, ready):
        connection, _ = listener.accept()
        buffer = bytearray(1 << 20)
        while connection.recv_into(buffer):
            pass

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        receiver = multiprocessing.get_context("fork").Process(target=receive, args=(listener, None))
        receiver.start()
        chunk = b"\0" * (1 << 20)
        with socket.create_connection(listener.getsockname()) as sender:
            started = time.perf_counter()
            for _ in range(megabytes):
                sender.sendall(chunk)
        receiver.join()
        return megabytes * 2**20 / 1e9 / (time.perf_counter() - started)


# --- A run ----------------------------------------------------------------------------------

WAYS = ("command", "page", "page_recorded", "api")


def run(args) -> dict:
    from devtools.workers import purge_queues

    folder = folder_ensure(args.photos)
    facts = folder_facts(folder)
    environment = common.django_setup(DATA_DIR, broker=True, MEDIA_ROOT=str(MEDIA_DIR), EMBEDDING_WEIGHTS="random")
    # Playwright's synchronous API keeps an asyncio loop running in this thread; no Django code
    # runs in it (as tests/browser/conftest.py explains), so Django's async check is lifted.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from django.conf import settings

    production = production_environment(environment["CELERY_BROKER_URL"])
    credentials = staff_ensure()
    ways = [way for way in args.ways.split(",") if way]
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["bench/uploads.py", *args.argv]),
        "revision": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                   text=True).stdout.strip(),
        "machine": {"cpu": common.cpu_model(), "cpus": os.cpu_count(),
                    "chromium": subprocess.run(["chromium", "--version"], capture_output=True,
                                               text=True).stdout.strip().split(" built")[0]},
        "folder": {key: value for key, value in facts.items() if key not in ("sizes",)},
        "settings": {"upload_concurrency": settings.UPLOAD_CONCURRENCY, "check_max": settings.UPLOAD_CHECK_MAX},
        "rounds": [],
    }
    gunicorn, port = gunicorn_start(production)
    try:
        import psutil

        result["settings"]["gunicorn_workers"] = len(psutil.Process(gunicorn.pid).children())
        for number in range(args.rounds):
            measured = {}
            for way in ways if number % 2 == 0 else ways[::-1]:  # each goes first in turn
                gallery_reset(folder, facts["known_names"])
                log(f"Round {number + 1}: {way}, {facts['files']} files ...")
                if way == "command":
                    measured[way] = way_command(folder, production)
                elif way in ("page", "page_recorded"):
                    measure = way_page if way == "page" else way_page_recorded
                    measured[way] = measure(folder, port=port, gunicorn_pid=gunicorn.pid, facts=facts,
                                            credentials=credentials)
                else:
                    measured[way] = way_api(folder, port=port, gunicorn_pid=gunicorn.pid, facts=facts,
                                            credentials=credentials, concurrency=settings.UPLOAD_CONCURRENCY)
                measured[way]["gallery"] = gallery_check(facts)
                purge_queues()  # the follow-up tasks both ways queued: no worker runs here
                log(f"  {measured[way]['seconds']:.1f} s, {facts['files'] / measured[way]['seconds']:.1f} files/s; "
                    + ", ".join(f"{k}={v}" for k, v in measured[way].items() if k not in ("seconds",)))
            result["rounds"].append(measured)
            common.save("uploads-last.json", result)  # a run cut short keeps what it measured
        result["command_start"] = command_start(production)
        if "page" in ways:
            result["browser_hash_ms"] = browser_hash_ms(port, facts["bytes"] // facts["files"])
        result["loopback_gbps"] = loopback_gbps()
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
        if not args.keep_services:
            common.servers_stop(DATA_DIR)
    return result


# --- Report ---------------------------------------------------------------------------------

LABELS = {"command": "`manage.py import_images <folder>`", "page": "the upload page in Chromium",
          "page_recorded": "the same, Playwright attached and recording every request",
          "api": "a script through the same API"}


def median_of(run: dict, way: str, read) -> float:
    return statistics.median(read(measured[way]) for measured in run["rounds"] if way in measured)


# CPU by part, per way: (the site's processes, the client, PostgreSQL). Playwright's driver is
# the harness's, not the page's, and counts with neither.
PARTS = {"command": ("command", None, "postgres"), "page": ("gunicorn", "chromium", "postgres"),
         "page_recorded": ("gunicorn", "chromium", "postgres"),
         "api": ("gunicorn", "client", "postgres")}


def cpu_per_file(run: dict, way: str) -> dict:
    """Milliseconds of CPU per file of the folder, by part (median of the rounds)."""
    files = run["folder"]["files"]
    site, client, database = PARTS[way]
    out = {"site": median_of(run, way, lambda m: m["cpu_seconds"][site]),
           "client": median_of(run, way, lambda m: m["cpu_seconds"][client]) if client else 0.0,
           "postgres": median_of(run, way, lambda m: m["cpu_seconds"][database]),
           "harness": median_of(run, way, lambda m: m["cpu_seconds"].get("playwright", 0.0)),
           "other": median_of(run, way, lambda m: m["cpu_seconds"]["other"])}
    return {key: 1000 * value / files for key, value in out.items()}


def ceilings(run: dict) -> dict:
    """Rates the CPU allows each way (files per second) if nothing else ran."""
    out = {}
    for way in WAYS:
        if any(way in measured for measured in run["rounds"]):
            cpu = cpu_per_file(run, way)
            if way == "command":  # one process, one file after another: one core at most
                out[way] = 1000 / cpu["site"]
            else:  # every part shares the same cores
                out[way] = run["machine"]["cpus"] * 1000 / (cpu["site"] + cpu["client"] + cpu["postgres"])
    return out


def values(runs: list[dict], run: dict) -> dict:
    files, folder = run["folder"]["files"], run["folder"]
    known, photos = folder["by_kind"]["known"], folder["by_kind"]["photo"]
    broken = folder["by_kind"]["truncated"]["files"] + folder["by_kind"]["not-image"]["files"]
    ways = [way for way in WAYS if any(way in measured for measured in run["rounds"])]
    seconds = {way: median_of(run, way, lambda m: m["seconds"]) for way in ways}
    ratios = {way: statistics.median(m["command"]["seconds"] / m[way]["seconds"] for m in run["rounds"]
                                     if way in m and "command" in m) for way in ways}
    limits = ceilings(run)
    out = {
        "uploads.machine": f"{run['machine']['cpu']}, {run['machine']['cpus']} cores; {run['machine']['chromium']}; "
                           f"gunicorn with {run['settings']['gunicorn_workers']} sync workers (the site's "
                           f"configuration), the page sending {run['settings']['upload_concurrency']} files at once",
        "uploads.files": f"{files:,}", "uploads.folder_gb": f"{folder['bytes'] / 1e9:.2f}",
        "uploads.photo_mb": f"{photos['bytes'] / photos['files'] / 1e6:.2f}",
        "uploads.known": f"{known['files']}", "uploads.known_mb": f"{known['bytes'] / 1e6:.0f}",
        "uploads.broken": f"{broken}", "uploads.rounds": f"{len(run['rounds'])}",
        "uploads.when": run["when"], "uploads.command": f"`{run['command']}`",
        "uploads.goal": f"{GOAL_RATIO}",
    }
    rows = []
    for way in ways:
        measured = [m[way] for m in run["rounds"] if way in m]
        recorded = "upload_body_bytes" in measured[0]
        sent = statistics.median(m["upload_body_bytes"] for m in measured) if recorded else None
        rows.append([
            LABELS[way], f"{seconds[way]:.1f}", " / ".join(f"{m['seconds']:.1f}" for m in measured),
            f"{files / seconds[way]:.1f}", "1.00" if way == "command" else f"**{ratios[way]:.2f}**",
            "— (reads the folder)" if way == "command" else "not recorded (nothing attached)" if sent is None
            else f"{sent / 1e9:.2f} GB in {measured[0]['upload_requests']:,} requests",
            ", ".join(sorted({str(len(m["known_sent"])) for m in measured})) if recorded else "—",
            ", ".join(sorted({f"{m['gallery']['images']:,}" for m in measured})),
        ])
    out["uploads.table"] = common.table(
        ["Way", "median s", "each round, s", "files/s", "× the command's rate", "bytes sent",
         "known files sent", "images in the gallery after"], rows, "lrrrrrrr")
    if "page" in ways:
        out.update({
            "uploads.ratio": f"{ratios['page']:.2f}",
            "uploads.ratio_met": "met" if ratios["page"] >= GOAL_RATIO else "**not met**",
            "uploads.page_rate": f"{files / seconds['page']:.1f}", "uploads.command_rate": f"{files / seconds['command']:.1f}",
            "uploads.page_seconds": f"{seconds['page']:.0f}", "uploads.command_seconds": f"{seconds['command']:.0f}",
        })
    # What the page sent: from the runs Playwright recorded (older runs recorded "page" itself).
    recorded_way = next((way for way in ("page_recorded", "page") if way in ways
                         and "upload_body_bytes" in run["rounds"][0].get(way, {})), None)
    if recorded_way:
        page = [m[recorded_way] for m in run["rounds"] if recorded_way in m]
        due = folder["bytes"] - known["bytes"]
        sent = statistics.median(m["upload_body_bytes"] for m in page)
        out.update({
            "uploads.recorded_ratio": f"{ratios[recorded_way]:.2f}",
            "uploads.sent_gb": f"{sent / 1e9:.3f}", "uploads.due_gb": f"{due / 1e9:.3f}",
            "uploads.sent_share": f"{sent / folder['bytes']:.1%}",
            "uploads.overhead": f"{(sent - due) / 1e3 / max(1, page[0]['upload_requests']):.2f}",
            "uploads.requests": f"{page[0]['upload_requests']:,}", "uploads.check_requests": f"{page[0]['check_requests']}",
            "uploads.check_kb": f"{page[0]['check_body_bytes'] / 1e3:.0f}",
            "uploads.known_sent": "none" if not any(m["known_sent"] for m in page)
            else ", ".join(sorted({n for m in page for n in m["known_sent"]})),
            "uploads.rows": ", ".join(f"{count:,} {status}" for status, count in sorted(page[0]["rows"].items())),
            "uploads.statuses": ", ".join(f"{count:,} × {status}" for status, count in sorted(
                page[0]["statuses"].items(), key=lambda item: str(item[0]))),
        })
    if "browser_hash_ms" in run:
        out["uploads.hash_ms"] = f"{run['browser_hash_ms']:.1f}"
        out["uploads.hash_s"] = f"{run['browser_hash_ms'] * files / 1000:.0f}"
    out["uploads.loopback"] = f"{run['loopback_gbps']:.1f}"
    out["uploads.loopback_s"] = f"{folder['bytes'] / 1e9 / run['loopback_gbps']:.1f}"
    command_cpu = cpu_per_file(run, "command")
    out["uploads.command_cpu"] = f"{command_cpu['site']:.1f}"
    out["uploads.command_postgres"] = f"{command_cpu['postgres']:.1f}"
    out["uploads.command_ceiling"] = f"{limits['command']:.1f}"
    out["uploads.command_start"] = f"{run['command_start']['seconds']:.1f}"
    out["uploads.workers"] = f"{run['settings']['gunicorn_workers']}"
    rows = []
    for way in ways:
        cpu = cpu_per_file(run, way)
        rows.append([LABELS[way], f"{cpu['site']:.1f}", f"{cpu['client']:.1f}" if way != "command" else "—",
                     f"{cpu['postgres']:.1f}", f"**{cpu['site'] + cpu['client'] + cpu['postgres']:.1f}**",
                     f"{limits[way]:.1f}", f"{cpu['harness']:.1f}" if way == "page_recorded" else "—", f"{cpu['other']:.1f}"])
    out["uploads.page_cpu"] = common.table(
        ["CPU ms per file", "the site (command or gunicorn)", "the client (Chromium or script)", "PostgreSQL",
         "all", "files/s the CPU allows", "the harness (Playwright's driver)", "other jobs on the machine meanwhile"],
        rows, "lrrrrrrr")
    if "page" in limits:
        out["uploads.page_ceiling"] = f"{limits['page']:.1f}"
        out["uploads.ceiling_ratio"] = f"{limits['page'] / limits['command']:.2f}"
    out["uploads.runs"] = common.table(
        ["When", "files", *(f"{way}, s" for way in ways), "page ÷ command rate"],
        [[each["when"] + (" (shown)" if each is run else ""), f"{each['folder']['files']:,}",
          *(" / ".join(f"{m[way]['seconds']:.1f}" for m in each["rounds"] if way in m) for way in ways),
          " / ".join(f"{m['command']['seconds'] / m['page']['seconds']:.2f}" for m in each["rounds"]
                     if "page" in m and "command" in m) or "—"] for each in runs], "lrrrrr")
    return out


def plot(run: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = run["folder"]["files"]
    ways = [way for way in WAYS if any(way in measured for measured in run["rounds"])]
    colours = {"command": "#4c72b0", "page": "#55a868", "page_recorded": "#8fbc8f", "api": "#8172b2"}
    figure, (rates, sent) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1.4, 1]})
    width = 0.8 / len(ways)
    for offset, way in enumerate(ways):
        heights = [files / m[way]["seconds"] for m in run["rounds"] if way in m]
        positions = [index + offset * width for index in range(len(heights))]
        rates.bar(positions, heights, width=width, color=colours[way], label=LABELS[way].replace("`", ""))
        for x, y in zip(positions, heights):
            rates.text(x, y, f"{y:.1f}", ha="center", va="bottom", fontsize=8)
    command = statistics.median(files / m["command"]["seconds"] for m in run["rounds"] if "command" in m)
    rates.axhline(GOAL_RATIO * command, color="grey", linestyle="--", linewidth=1,
                  label=f"goal: {GOAL_RATIO} × the command's rate (median of the rounds)")
    rates.set_xticks([index + width * (len(ways) - 1) / 2 for index in range(len(run["rounds"]))],
                     [f"round {index + 1}" for index in range(len(run["rounds"]))])
    rates.set(ylabel="files per second", title=f"A folder of {files:,} files, start to every row in")
    # Under the axes, where it hides no bar.
    rates.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    folder = run["folder"]
    bars = [("folder", folder["bytes"], "#8c8c8c"),
            ("already in\nthe gallery", folder["by_kind"]["known"]["bytes"], "#dd8452")]
    for way, name in (("page_recorded", "the page"), ("page", "the page"), ("api", "the script")):
        measured = [m[way] for m in run["rounds"] if way in m and "upload_body_bytes" in m[way]]
        if measured and not (way == "page" and "page_recorded" in ways):
            bars.append((f"sent by\n{name}", statistics.median(m["upload_body_bytes"] for m in measured), colours[way]))
    names, heights, colours_ = zip(*bars)
    sent.bar(range(len(bars)), [h / 1e9 for h in heights], color=colours_)
    sent.set_xticks(range(len(bars)), names, fontsize=8)
    for index, height in enumerate(heights):
        sent.text(index, height / 1e9, f"{height / 1e9:.2f}", ha="center", va="bottom", fontsize=8)
    sent.set(ylabel="GB", title="Bytes: the folder, and the upload request bodies")
    figure.tight_layout()
    figure.savefig(PLOT_FILE, dpi=110, bbox_inches="tight")
    plt.close(figure)


def write_report(runs: list[dict]) -> None:
    run = runs[-1]
    plot(run)
    # The page's other regions are ingest.py's: left to it, not named as unmeasured here.
    names = [name for name, _ in common.MARKED.findall(DOCS_FILE.read_text())]
    others = tuple(name for name in names if not name.startswith("uploads.")) or ("\0",)
    common.fill(DOCS_FILE, values(runs, run), others=others)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--photos", type=int, default=2000, help="files in the folder (default 2000: 1 %% broken, 5 %% known)")
    add("--rounds", type=int, default=2, help="rounds of every way, the order reversed each time (default 2)")
    add("--ways", default="command,page", help="which, in a round's order: command, page, api (default command,page)")
    add("--keep-services", action="store_true", help="leave the bench PostgreSQL and Redis running")
    add("--prepare-only", action="store_true", help="generate the folder and stop")
    add("--report-only", action="store_true", help="rewrite the docs section from the saved runs")
    add("--no-save", action="store_true", help="do not add this run to the saved runs or the docs")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM, the servers, gunicorn and Chromium are stopped too (finally blocks).
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    args.argv = sys.argv[1:] if argv is None else argv
    if args.prepare_only:
        folder_ensure(args.photos)
        return 0
    runs = common.load("uploads-runs.json", [])
    if not args.report_only:
        result = run(args)
        if args.no_save:
            return 0
        runs.append(result)
        common.save("uploads-runs.json", runs)
    if not runs:
        raise SystemExit("No saved runs; run without --report-only first.")
    write_report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
