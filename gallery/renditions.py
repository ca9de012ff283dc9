"""Renditions: smaller, re-encoded copies of an image for pages: pixels in sRGB, no metadata at all."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image as PILImage

from imaging import UndecodableImage, load_rgb

from .models import RENDITION_WIDTHS, Image, Rendition
from .storage import stored_file_delete

logger = logging.getLogger(__name__)


def _render(picture: PILImage.Image, *, spec: int) -> tuple[bytes, int, int]:
    """Scale down (never up) to ``spec`` pixels wide and re-encode, pixels only."""
    width = min(spec, picture.width)
    height = max(1, round(picture.height * width / picture.width))
    scaled = picture.copy() if width == picture.width else picture.resize((width, height), PILImage.Resampling.LANCZOS)
    # The decoder's picture is already sRGB pixels without metadata (imaging.decode); emptying
    # ``info`` again keeps a later change there from reaching public bytes, since Pillow
    # writes parts of it (a comment, XMP) back on save.
    scaled.info = {}
    buffer = io.BytesIO()
    scaled.save(buffer, "JPEG", quality=82, optimize=True, progressive=True)
    return buffer.getvalue(), width, height


def renditions_create(*, image: Image) -> list[Rendition]:
    """Make the renditions the image lacks; those it has are left alone (safe to repeat).

    Raises UndecodableImage when the stored file cannot be read as a picture.
    """
    missing = sorted(set(RENDITION_WIDTHS) - set(image.renditions.values_list("spec", flat=True)))
    if not missing:
        return []
    try:
        with image.file.open("rb") as handle:
            # A JPEG decodes at reduced scale, still at least as large as the widest rendition
            # on its shorter side, so a 24-megapixel photo's thumbnails cost a fraction.
            picture = load_rgb(handle, draft_min_side=max(RENDITION_WIDTHS))
    except FileNotFoundError:
        raise UndecodableImage("The stored file is missing.") from None
    created = []
    for spec in missing:
        content, width, height = _render(picture, spec=spec)
        rendition = Rendition(image=image, spec=spec, width=width, height=height)
        rendition.file.save(f"{spec}.jpg", ContentFile(content), save=False)
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
