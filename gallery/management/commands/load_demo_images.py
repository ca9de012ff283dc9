"""Load the demo photographs that ship with scikit-image, once.

Besides the originals, a few crops and mirror images are added so that the recommendation
pages have true look-alikes to show. Running it again adds nothing (content hashes).
"""

import io
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand
from PIL import Image as PILImage
from PIL import ImageOps
from tqdm import tqdm

from gallery.services import DuplicateImageError, image_create

# (file in skimage/data, caption): only images whose licence scikit-image documents as
# public domain, CC0 or free of known restrictions (credited in the README).
DEMO_IMAGES = [
    ("astronaut.png", "Astronaut Eileen Collins"),
    ("coffee.png", "A cup of coffee"),
    ("chelsea.png", "Chelsea the cat"),
    ("rocket.jpg", "Rocket on the launch pad"),
    ("hubble_deep_field.jpg", "Hubble deep field"),
    ("retina.jpg", "Human retina"),
    ("ihc.png", "Immunohistochemistry stain"),
    ("camera.png", "Photographer with a camera"),
    ("horse.png", "Horse silhouette"),
    ("coins.png", "Greek coins"),
    ("text.png", "Hand-drawn text"),
    ("brick.png", "Brick wall"),
    ("grass.png", "Grass"),
    ("gravel.png", "Gravel"),
    ("cell.png", "A cell under the microscope"),
    ("microaneurysms.png", "Retinal microaneurysms"),
    ("clock_motion.png", "Clock with motion blur"),
]

# (source file, caption, how to vary it): look-alikes for the recommendation pages.
VARIANTS = [
    ("chelsea.png", "Chelsea the cat, close-up", lambda image: image.crop((60, 20, 360, 260))),
    ("coffee.png", "A cup of coffee, mirrored", ImageOps.mirror),
    ("astronaut.png", "Astronaut, detail", lambda image: image.crop((0, 0, 360, 360))),
    ("rocket.jpg", "Rocket, mirrored", ImageOps.mirror),
    ("grass.png", "Grass, rotated", lambda image: image.rotate(90)),
    ("hubble_deep_field.jpg", "Hubble deep field, detail", lambda image: image.crop((0, 0, 500, 400))),
    ("coins.png", "Greek coins, detail", lambda image: image.crop((0, 0, 250, 200))),
]


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _png_upload(image: PILImage.Image, name: str) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


class Command(BaseCommand):
    help = "Add scikit-image's sample photographs (and a few variants) to the gallery, once."

    def handle(self, *args, **options):
        data_dir = skimage_data_dir()
        items = []
        for file_name, caption in DEMO_IMAGES:
            path = data_dir / file_name
            if path.exists():
                items.append((caption, lambda path=path: SimpleUploadedFile(path.name, path.read_bytes())))
        for file_name, caption, vary in VARIANTS:
            path = data_dir / file_name
            if path.exists():
                name = f"{path.stem}-variant.png"
                def make(path=path, vary=vary, name=name):
                    return _png_upload(vary(PILImage.open(path).convert("RGB")), name)

                items.append((caption, make))

        added = skipped = 0
        for caption, make_upload in tqdm(items, desc="Demo images", unit="image"):
            try:
                image_create(upload=make_upload(), caption=caption)
            except DuplicateImageError:
                skipped += 1
            else:
                added += 1
        self.stdout.write(f"Demo images: {added} added, {skipped} already there.")
