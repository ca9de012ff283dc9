"""The README's screenshots (docs/img/): the gallery, a recommendation page, a search result
and the admin's upload page mid-upload.

Run against the demo site: `make run` in one terminal, then, in another,
`.venv/bin/python -m devtools.readme_screenshots [--base-url http://127.0.0.1:8000] [--only upload]`.
It tags the demo images (so the gallery shows its tag navigation), waits until the worker
has embedded them all, and drives Debian's Chromium as the browser tests do. The upload
screenshot drops a folder of generated photos (and copies of a few demo images, which the page
finds already in the gallery) over a throttled connection, takes the picture part-way, then
cancels and deletes what it added, so the demo gallery is as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Tags for the demo images, by words in their captions.
DEMO_TAGS = {
    "space": ["Astronaut", "Rocket", "Hubble"],
    "microscopy": ["retina", "Retinal", "Immunohistochemistry", "cell"],
    "textures": ["Brick", "Grass", "Gravel"],
    "animals": ["cat", "Horse"],
}
SCREENSHOTS = ("gallery", "recommendation", "search", "upload")
# The upload screenshot's drop: generated photos in two day folders, with copies of these demo
# images (already in the gallery) and one file that is no picture among them.
UPLOAD_PHOTOS = 60
UPLOAD_KNOWN_CAPTIONS = ["Chelsea the cat", "A cup of coffee", "Rocket on the launch pad"]
# Bytes per second the browser may send: slow enough that the picture catches files in flight.
UPLOAD_THROUGHPUT = 1_500_000
CHROMIUM_ARGUMENTS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def demo_images_tag() -> int:
    from gallery.models import Image
    from gallery.services import images_tag

    for name, words in DEMO_TAGS.items():
        ids = [image.pk for image in Image.objects.all() if any(word in image.title for word in words)]
        images_tag(image_ids=ids, names=[name])
    return Image.objects.count()


def all_embedded() -> bool:
    from gallery.models import Image

    return not Image.objects.exclude(pk__in=Image.objects.ready()).exists() and not Image.objects.filter(
        renditions__isnull=True
    ).exists()


def pictures_loaded(page) -> None:
    """Those in the viewport (lazy ones further down may never load)."""
    page.wait_for_function(
        "() => [...document.images].filter(img => img.currentSrc && img.getBoundingClientRect().top < innerHeight)"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )


def upload_folder_make(root: Path) -> Path:
    """A trip's photos to drop on the upload page: generated JPEGs, copies of demo images, a stray note."""
    from imaging import synthetic_photo

    from gallery.models import Image

    folder = root / "Lisbon 2024"
    for index in range(UPLOAD_PHOTOS):
        day = folder / f"day {index % 2 + 1}"
        day.mkdir(parents=True, exist_ok=True)
        synthetic_photo(1000 + index, (1200, 800)).save(day / f"IMG_{4100 + index}.jpg", quality=88)
    for caption in UPLOAD_KNOWN_CAPTIONS:
        image = Image.objects.get(caption=caption)
        with image.file.open("rb") as original:
            (folder / "day 1" / image.original_name).write_bytes(original.read())
    (folder / "day 2" / "notes.jpg").write_text("Tram 28 at nine; Alfama after lunch.\n")
    return folder


def admin_session_cookie(base_url: str) -> dict:
    """A signed-in session of the demo's admin account (made by `make run`), as a browser cookie."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.filter(is_superuser=True).earliest("pk"))
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": base_url}


def upload_screenshot(browser, base_url: str, folder: Path, cookie: dict, path: Path) -> None:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 1000})
    context.add_cookies([cookie])
    page = context.new_page()
    # The demo server is on this machine: throttle the upload, as a real connection would be.
    devtools = context.new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": UPLOAD_THROUGHPUT},
    )
    page.goto("/admin/gallery/image/add/")
    # No tags: the check would give them to the demo images it finds, and they would stay.
    page.get_by_label("Choose a folder…").set_input_files(folder)
    page.wait_for_function("() => document.querySelector('#bulk-overall').value >= 40", timeout=120_000)
    pictures_loaded(page)
    page.screenshot(path=path)
    page.get_by_role("button", name="Cancel").click()
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "docs" / "img")
    parser.add_argument("--only", choices=SCREENSHOTS, action="append", help="this screenshot only (again for more)")
    arguments = parser.parse_args()
    wanted = set(arguments.only or SCREENSHOTS)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings.local")
    import django

    django.setup()
    count = demo_images_tag()
    deadline = time.monotonic() + 600
    while not all_embedded():
        if time.monotonic() > deadline:
            raise SystemExit("The demo images were not all embedded within 10 minutes: is the worker running?")
        time.sleep(2)

    from playwright.sync_api import sync_playwright

    from gallery.models import Image

    arguments.out.mkdir(parents=True, exist_ok=True)
    # Read before the browser starts: Django refuses database calls while Playwright's loop runs.
    cat = Image.objects.get(caption="Chelsea the cat")
    photo = Image.objects.get(caption="A cup of coffee").renditions.get(kind="display", spec=640).file.path
    last_before_upload = Image.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    with tempfile.TemporaryDirectory() as scratch:
        if "upload" in wanted:
            folder = upload_folder_make(Path(scratch))
            cookie = admin_session_cookie(arguments.base_url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGUMENTS)
            page = browser.new_page(base_url=arguments.base_url, viewport={"width": 1280, "height": 800})
            if "gallery" in wanted:
                page.goto("/")
                pictures_loaded(page)
                page.screenshot(path=arguments.out / "gallery.png")

            # Taller, so that the similar images and their scores are in the picture.
            page.set_viewport_size({"width": 1280, "height": 1000})
            if "recommendation" in wanted:
                page.goto(f"/images/{cat.pk}/?k=6")
                pictures_loaded(page)
                page.screenshot(path=arguments.out / "recommendation.png")

            if "search" in wanted:
                page.goto("/search/")
                page.get_by_label("Your photo").set_input_files(photo)
                page.get_by_label("Show").select_option("6")
                page.get_by_role("button", name="Search").click()
                page.get_by_role("heading", name="Most similar images").wait_for(timeout=60_000)
                pictures_loaded(page)
                page.screenshot(path=arguments.out / "search.png")

            if "upload" in wanted:
                upload_screenshot(browser, arguments.base_url, folder, cookie, arguments.out / "upload.png")
            browser.close()
    if "upload" in wanted:
        # The photos the upload added before it was cancelled, deleted as the admin deletes them,
        # once the worker is done with them (a rendition written meanwhile would hold one back).
        deadline = time.monotonic() + 600
        while not all_embedded() and time.monotonic() < deadline:
            time.sleep(2)
        added = Image.objects.filter(pk__gt=last_before_upload)
        print(f"Deleting the {added.count()} images the upload screenshot added.")
        added.delete()
    print(f"{count} images; screenshots in {arguments.out}")


if __name__ == "__main__":
    main()
