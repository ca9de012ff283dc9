"""Renditions: smaller, re-encoded copies of an image for pages: pixels in sRGB, no metadata at all."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image as PILImage

from imaging import UndecodableImage, load_rgb

from .models import CARD_ASPECT_RATIO, RENDITION_SPECS, Image, Rendition, RenditionSpec
from .storage import stored_file_delete

logger = logging.getLogger(__name__)

# Per format: Pillow's name, the file's extension and the encoder's settings. AVIF at 50 and
# WebP at 75 look like the JPEG at 82 on photos at under half and about two thirds of its
# bytes. AVIF's speed 8 rather than libavif's default 6: on four photos' 640-pixel cards it
# encodes in 59 ms against 263 ms on one core, and at 50 rather than 55 its files are still
# smaller than speed 6's (18.4 against 19.6 KB). One thread each: a worker already makes
# renditions for several images side by side.
ENCODINGS = {
    "jpeg": ("JPEG", "jpg", {"quality": 82, "optimize": True, "progressive": True}),
    "webp": ("WEBP", "webp", {"quality": 75, "method": 4}),
    "avif": ("AVIF", "avif", {"quality": 50, "speed": 8, "max_threads": 1}),
}


def _card_crop(picture: PILImage.Image) -> PILImage.Image:
    """The centre of the picture in the card's shape (3:2), as a card would show it."""
    aspect_width, aspect_height = CARD_ASPECT_RATIO
    width, height = picture.size
    if width * aspect_height > height * aspect_width:  # wider than a card: sides cut
        cropped_width = max(1, round(height * aspect_width / aspect_height))
        left = (width - cropped_width) // 2
        return picture.crop((left, 0, left + cropped_width, height))
    cropped_height = max(1, round(width * aspect_height / aspect_width))
    top = (height - cropped_height) // 2
    return picture.crop((0, top, width, top + cropped_height))


def _render(picture: PILImage.Image, *, spec: RenditionSpec) -> tuple[bytes, int, int]:
    """Crop for a card, scale down (never up) to ``spec.width`` pixels wide and re-encode, pixels only."""
    if spec.kind == Rendition.Kind.CARD:
        picture = _card_crop(picture)
    width = min(spec.width, picture.width)
    height = max(1, round(picture.height * width / picture.width))
    scaled = picture.copy() if width == picture.width else picture.resize((width, height), PILImage.Resampling.LANCZOS)
    # The decoder's picture is already sRGB pixels without metadata (imaging.decode); emptying
    # ``info`` again keeps a later change there from reaching public bytes, since Pillow
    # writes parts of it (a comment, XMP, an ICC profile) back on save.
    scaled.info = {}
    pillow_format, _, options = ENCODINGS[spec.format]
    buffer = io.BytesIO()
    scaled.save(buffer, pillow_format, **options)
    return buffer.getvalue(), width, height


def renditions_create(*, image: Image) -> list[Rendition]:
    """Make the renditions the image lacks; those it has are left alone (safe to repeat).

    Raises UndecodableImage when the stored file cannot be read as a picture.
    """
    made = set(image.renditions.values_list("kind", "spec", "format"))
    missing = [spec for spec in RENDITION_SPECS if (spec.kind, spec.width, spec.format) not in made]
    if not missing:
        return []
    try:
        with image.file.open("rb") as handle:
            # A JPEG decodes at reduced scale, still at least as large as the widest rendition
            # on its shorter side, so a 24-megapixel photo's thumbnails cost a fraction.
            picture = load_rgb(handle, draft_min_side=max(spec.width for spec in RENDITION_SPECS))
    except FileNotFoundError:
        raise UndecodableImage("The stored file is missing.") from None
    created = []
    for spec in missing:
        content, width, height = _render(picture, spec=spec)
        rendition = Rendition(image=image, kind=spec.kind, spec=spec.width, format=spec.format, width=width, height=height)
        # Named after its bytes (rendition_upload_to): a name is never reused for others.
        extension = ENCODINGS[spec.format][1]
        rendition.file.save(f"{hashlib.sha256(content).hexdigest()[:12]}.{extension}", ContentFile(content), save=False)
        try:
            with transaction.atomic():
                rendition.save()
        except IntegrityError:
            # Another worker made it first, or the image was deleted meanwhile.
            stored_file_delete(rendition.file)
            continue
        created.append(rendition)
    return created


def renditions_create_for(*, image_ids: Iterable[int]) -> dict[str, int]:
    """Make missing renditions for these images; a file that cannot be read is logged and skipped."""
    counts = {"created": 0, "failed": 0}
    for image in Image.objects.filter(pk__in=list(image_ids)).order_by("pk"):
        try:
            counts["created"] += len(renditions_create(image=image))
        except UndecodableImage as error:
            counts["failed"] += 1
            logger.warning("No renditions for image %s: %s", image.pk, error, extra={"image_ids": [image.pk]})
    return counts
