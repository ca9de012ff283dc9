"""The admin's "Add images" page in a real browser (issue 20): a dropped folder goes file by file,
files the gallery already holds are never sent, broken ones are refused with their reason, a cut
connection is retried, a zip is expanded by a real worker with its progress on the page, and
without JavaScript the classic form still works."""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import expect

from gallery.models import Image
from gallery.services import image_create
from tests.browser.conftest import VIEWPORT, _unexpected, _with_content_security_policy
from tests.browser.test_audits import axe_source, axe_violations  # noqa: F401 (a fixture)
from tests.conftest import encode, photo_like, upload

ADD_PATH = "/admin/gallery/image/add/"
UPLOAD_PATH = "/api/uploads/"
FILENAME = re.compile(rb'name="file"; filename="([^"]*)"')


def is_upload(request) -> bool:
    return request.method == "POST" and request.url.split("?")[0].endswith(UPLOAD_PATH)


@pytest.fixture
def admin_page(chromium, site, django_user_model, client):
    """admin_page(**context_options) -> a page signed in as a superuser, under the strict policy.

    Like conftest's new_page, any script or console error fails the test, except the browser's
    own line about an upload the test refused or cut on purpose ("Failed to load resource" for
    /api/uploads/: a 400 refusal, an aborted request).
    """
    user = django_user_model.objects.create_superuser("curator", "curator@example.com", "not-a-real-password")
    client.force_login(user)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    contexts, errors = [], []

    def expected(message) -> bool:
        return "Failed to load resource" in message.text and UPLOAD_PATH in message.location.get("url", "")

    def make(**options):
        context = chromium.new_context(base_url=site, **{"viewport": VIEWPORT, **options})
        context.set_default_timeout(15_000)
        context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": site}])
        context.route("**/*", _with_content_security_policy)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        page.on(
            "console",
            lambda message: _unexpected(page, message) and not expected(message) and errors.append(f"{page.url}: {message.text}"),
        )
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, "\n".join(errors)


def photo_folder(root: Path, known: int, broken: dict[str, bytes]) -> dict[str, list[str]]:
    """trip/harbour and trip/hills, 50 files in all: photos, the `broken` ones, and `known` photos
    already added to the gallery. {"all", "known", "broken"}: relative paths as the browser names them."""
    photos = 50 - len(broken)
    paths = {"all": [], "known": [], "broken": []}
    for index in range(photos):
        relative = f"trip/{'harbour' if index % 2 else 'hills'}/IMG_{index:03}.jpg"
        content = encode(photo_like(index, (96, 64)), quality=80)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
        paths["all"].append(relative)
        if index < known:
            image_create(upload=upload(f"earlier-{index}.jpg", content), enqueue=False)
            paths["known"].append(relative)
    for name, content in broken.items():
        relative = f"trip/hills/{name}"
        (root / relative).write_bytes(content)
        paths["all"].append(relative)
        paths["broken"].append(relative)
    return paths


def sent_names(requests) -> list[str]:
    """The file name each upload request carried (its multipart part's filename)."""
    names = []
    for request in requests:
        match = FILENAME.search(request.post_data_buffer or b"")
        names.append(match.group(1).decode() if match else "?")
    return names


def test_a_dropped_folder_is_sent_file_by_file_without_the_known_ones_and_retried_after_a_cut(
    admin_page, tmp_path, settings, axe_source, screenshot
):
    # One automatic retry: a cut connection fails a file within about a second.
    settings.UPLOAD_RETRIES = 1
    truncated = encode(photo_like(99, (96, 64)))[:400]
    paths = photo_folder(tmp_path, known=3, broken={"notes.jpg": b"plain text, not a picture", "cut-short.jpg": truncated})
    known_ids = sorted(Image.objects.values_list("pk", flat=True))
    page = admin_page()
    requests = []
    page.on("request", lambda request: is_upload(request) and requests.append(request))
    # The connection drops after the 20th upload request, and stays down until unrouted.
    passed = []

    def cut_after_twenty(route):
        if len(passed) < 20:
            passed.append(route.request)
            route.continue_()
        else:
            route.abort("connectionreset")

    page.route(f"**{UPLOAD_PATH}", cut_after_twenty)

    page.goto(ADD_PATH)
    expect(page.get_by_role("heading", name="Add images")).to_be_visible()
    expect(page.locator("form.classic-upload")).to_be_hidden()
    page.get_by_role("textbox", name="Tags:").fill("holiday")
    page.get_by_label("Choose a folder…").set_input_files(tmp_path / "trip")

    retry = page.get_by_role("button", name=re.compile(r"Retry the failed ones"))
    expect(retry).to_be_visible(timeout=60_000)
    summary = page.get_by_role("status")
    expect(summary).to_contain_text(re.compile(r"^Finished: .* failed\.$"), timeout=30_000)
    overall = page.get_by_label("Overall progress")
    assert overall.evaluate("bar => bar.value") < 100
    failed = page.locator(".bulk-results .outcome-failed")
    assert failed.count() > 0
    expect(failed.first).to_contain_text("not sent: The connection failed. Tried 2 times.")

    page.unroute(f"**{UPLOAD_PATH}")
    retry.click()
    expect(overall).to_have_js_property("value", 100, timeout=60_000)
    expect(summary).to_have_text("Finished: 45 added, 3 already in the gallery, 2 refused.")
    expect(page.locator(".files-done")).to_have_text("50 of 50 files done")

    # Every file has its row, with what became of it.
    rows = page.locator(".bulk-results .results-group [role=row]")
    expect(rows).to_have_count(50)
    shown = rows.evaluate_all("rows => rows.map(row => [row.dataset.path, row.className, row.children[1].textContent])")
    results = {path: (outcome, text) for path, outcome, text in shown}
    assert sorted(results) == sorted(paths["all"])
    for path in paths["known"]:
        assert results[path][0] == "result outcome-duplicate"
        assert re.fullmatch(r"already in the gallery: image (\d+) \(earlier \d\)", results[path][1]), results[path]
    assert {int(re.search(r"image (\d+)", results[path][1]).group(1)) for path in paths["known"]} == set(known_ids)
    for path in paths["broken"]:
        assert results[path][0] == "result outcome-refused" and re.fullmatch(r"refused: \S.+", results[path][1]), results[path]
    added = [path for path, (outcome, _) in results.items() if outcome == "result outcome-added"]
    assert len(added) == 45
    link = page.locator(f'.bulk-results [role=row][data-path="{added[0]}"] a')
    image_id = int(link.text_content())
    expect(link).to_have_attribute("href", f"/admin/gallery/image/{image_id}/change/")

    # The known files were never sent; every other file was, the broken ones too (and judged).
    names = sent_names(requests)
    known_names = {path.rsplit("/", 1)[1] for path in paths["known"]}
    assert known_names.isdisjoint(names)
    assert set(names) == {path.rsplit("/", 1)[1] for path in paths["all"]} - known_names
    # A refusal is final: each broken file went once, or again only after its request was cut.
    retried = set(names[20:])
    for name in ("notes.jpg", "cut-short.jpg"):
        assert names.count(name) == 1 or name in retried
    assert Image.objects.count() == 48
    added_image = Image.objects.get(pk=image_id)
    assert added_image.original_name in {path.rsplit("/", 1)[1] for path in added}
    assert sorted(added_image.tags.values_list("name", flat=True)) == ["holiday"]

    screenshot(page, "admin-upload-folder", full_page=True)
    # At a laptop's width and a phone's (WCAG's reflow width), as tests/browser/test_audits.py does.
    violations = axe_violations(page, axe_source)
    page.set_viewport_size({"width": 320, "height": 800})
    violations += axe_violations(page, axe_source)
    # And in the admin's dark theme (its "auto" follows the system's).
    page.emulate_media(color_scheme="dark")
    page.wait_for_function("() => document.getAnimations().length === 0")  # the admin's colour transitions
    violations += axe_violations(page, axe_source)
    assert violations == [], "\n".join(violations)


@pytest.mark.end_to_end
def test_a_zip_dropped_on_the_page_is_expanded_by_the_worker_with_its_progress(admin_page, worker, screenshot):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in range(6):
            archive.writestr(f"scenes/scene-{seed}.jpg", encode(photo_like(seed, (96, 64))))
        archive.writestr("scenes/readme.jpg", b"not a picture")
    page = admin_page()
    page.goto(ADD_PATH)
    # Every state the zip's row shows, however briefly (the worker may be quicker than a look).
    page.evaluate(
        """() => {
            window.zipStates = [];
            new MutationObserver(() => {
                const row = document.querySelector('[role=row][data-path="scenes.zip"]');
                const text = row && row.children[1].textContent;
                if (text && text !== window.zipStates.at(-1)) window.zipStates.push(text);
            }).observe(document.querySelector(".bulk-results"), {subtree: true, childList: true, characterData: true});
        }"""
    )
    # A real drop: a DataTransfer holding the zip, dropped on the zone.
    page.locator(".drop-zone").evaluate(
        """(zone, content) => {
            const bytes = Uint8Array.from(atob(content), character => character.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "scenes.zip", {type: "application/zip"}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        base64.b64encode(buffer.getvalue()).decode(),
    )
    row = page.locator('.bulk-results [role=row][data-path="scenes.zip"]')
    expect(row).to_contain_text(
        "zip expanded: 7 of 7 members done (6 added, 0 already in the gallery, 1 refused)", timeout=90_000
    )
    # Stored at once (no request waits for the archive), then followed until the worker was done.
    states = page.evaluate("window.zipStates")
    assert states[0].startswith("zip stored; waiting for a worker: 0 of "), states
    assert all(re.match(r"zip (stored|expanded)", state) for state in states), states
    expect(page.get_by_role("status")).to_have_text("Finished: 0 added, 0 already in the gallery, 0 refused, 1 zip stored and expanded.")
    row.get_by_text("Refused members").click()
    expect(row.get_by_role("listitem")).to_have_text(re.compile(r"scenes/readme\.jpg: The file is not an image"))
    assert sorted(Image.objects.values_list("original_name", flat=True)) == [f"scene-{seed}.jpg" for seed in range(6)]
    screenshot(page, "admin-upload-zip")


def test_without_javascript_the_classic_form_uploads(admin_page, tmp_path):
    photo = tmp_path / "harbour.jpg"
    photo.write_bytes(encode(photo_like(3, (96, 64))))
    page = admin_page(java_script_enabled=False)
    page.goto(ADD_PATH)
    expect(page.locator("section.bulk-upload")).to_be_hidden()
    page.get_by_label("Images:").set_input_files(photo)
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text(re.compile(r"Added harbour\.jpg as image \d+\."))).to_be_visible()
    assert list(Image.objects.values_list("original_name", flat=True)) == ["harbour.jpg"]


def test_leaving_while_files_are_pending_asks_first_and_cancel_stops_them(admin_page, tmp_path, axe_source):
    photo_folder(tmp_path, known=0, broken={})
    page = admin_page()
    held = []
    page.route(f"**{UPLOAD_PATH}", lambda route: held.append(route))  # the server never answers
    page.goto(ADD_PATH)
    page.get_by_label("Choose a folder…").set_input_files(tmp_path / "trip")
    expect(page.locator(".in-flight li")).to_have_count(4)  # UPLOAD_CONCURRENCY at a time
    # Mid-upload, with a progress bar for each file in flight: still no WCAG violation.
    violations = axe_violations(page, axe_source)
    assert violations == [], "\n".join(violations)

    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.dismiss()))
    page.close(run_before_unload=True)
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()  # still here: the leave was refused
    assert dialogs == ["beforeunload"]

    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_have_text("Finished: 0 added, 0 already in the gallery, 0 refused, 50 cancelled.")
    expect(page.locator(".bulk-results .outcome-cancelled")).to_have_count(50)
    expect(page.locator(".in-flight li")).to_have_count(0)
    assert len(held) == 4 and Image.objects.count() == 0
    expect(page.get_by_role("button", name="Retry the failed ones (50)")).to_be_visible()


def test_without_web_crypto_every_file_is_sent_and_the_server_still_finds_the_known_one(admin_page, tmp_path):
    """Over plain HTTP (not a secure context) the browser has no crypto.subtle to hash with."""
    photos = [encode(photo_like(seed, (96, 64))) for seed in range(4)]
    known = image_create(upload=upload("earlier.jpg", photos[0]), enqueue=False)
    for seed, content in enumerate(photos):
        (tmp_path / f"photo-{seed}.jpg").write_bytes(content)
    page = admin_page()
    page.add_init_script("Object.defineProperty(window, 'isSecureContext', {value: false})")
    requests = []
    page.on("request", lambda request: requests.append(request.url) if request.method == "POST" else None)
    page.goto(ADD_PATH)
    expect(page.locator(".drop-zone")).to_contain_text("the browser cannot fingerprint files")
    page.get_by_label("Choose files…").set_input_files(sorted(tmp_path.glob("*.jpg")))
    expect(page.get_by_role("status")).to_have_text("Finished: 3 added, 1 already in the gallery, 0 refused.")
    expect(page.locator('[role=row][data-path="photo-0.jpg"]')).to_contain_text(f"already in the gallery: image {known.pk}")
    assert sorted(url.split("/", 3)[3] for url in requests) == ["api/uploads/"] * 4  # no check request
