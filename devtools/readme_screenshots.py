"""The README's screenshots (docs/img/): the gallery, a recommendation page and a search result.

Run against the demo site: `make run` in one terminal, then, in another,
`.venv/bin/python -m devtools.readme_screenshots [--base-url http://127.0.0.1:8000]`.
It tags the demo images (so the gallery shows its tag navigation), waits until the worker
has embedded them all, and drives Debian's Chromium as the browser tests do.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "docs" / "img")
    arguments = parser.parse_args()

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
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGUMENTS)
        page = browser.new_page(base_url=arguments.base_url, viewport={"width": 1280, "height": 800})
        page.goto("/")
        pictures_loaded(page)
        page.screenshot(path=arguments.out / "gallery.png")

        # Taller, so that the similar images and their scores are in the picture.
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.goto(f"/images/{cat.pk}/?k=6")
        pictures_loaded(page)
        page.screenshot(path=arguments.out / "recommendation.png")

        page.goto("/search/")
        page.get_by_label("Your photo").set_input_files(photo)
        page.get_by_label("Show").select_option("6")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("heading", name="Most similar images").wait_for(timeout=60_000)
        pictures_loaded(page)
        page.screenshot(path=arguments.out / "search.png")
        browser.close()
    print(f"{count} images; screenshots in {arguments.out}")


if __name__ == "__main__":
    main()
