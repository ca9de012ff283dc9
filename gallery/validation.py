"""Upload validation: an image is accepted only if it decodes, whatever its name claims.

Follows OWASP's file-upload advice: an allow-list of formats checked by decoding the bytes,
size and pixel limits (decompression bombs included), and a cleaned display name.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
ORIGINAL_NAME_MAX_LENGTH = 200
EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # a quarter turn: width and height swap


@dataclass(frozen=True)
class ImageFacts:
    format: str
    width: int
    height: int
    file_size: int
    sha256: str


def clean_original_name(name: str) -> str:
    """The name shown to people: no directories, no control characters, bounded length."""
    base = os.path.basename((name or "").replace("\\", "/"))
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if len(base) > ORIGINAL_NAME_MAX_LENGTH:
        stem, extension = os.path.splitext(base)
        if len(extension) > ORIGINAL_NAME_MAX_LENGTH // 2:
            stem, extension = base, ""  # too long to be a real extension: cut it like the rest
        base = stem[: ORIGINAL_NAME_MAX_LENGTH - len(extension)] + extension
    return base or "unnamed"


def file_sha256(upload) -> str:
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in iter(lambda: upload.read(1024 * 1024), b""):
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _decode_fully(upload, max_pixels: int) -> tuple[str, int, int]:
    upload.seek(0)
    with warnings.catch_warnings():
        # Pillow warns between MAX_IMAGE_PIXELS and twice that; treat the warning as the error.
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        previous_limit = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = max_pixels
        try:
            with PILImage.open(upload) as image:
                image_format = image.format
                width, height = image.size
                if image_format not in ALLOWED_FORMATS:
                    raise ValidationError(
                        "%(format)s images are not accepted. Accepted formats: %(allowed)s.",
                        code="format",
                        params={"format": image_format, "allowed": ", ".join(sorted(ALLOWED_FORMATS))},
                    )
                if width * height > max_pixels:
                    raise PILImage.DecompressionBombError("too many pixels")
                if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_ORIENTATIONS:
                    # Shown upright, as the pages and the embedding see it.
                    width, height = height, width
                if image_format == "JPEG":
                    # Decoding at reduced scale still reads every byte, so truncation shows,
                    # but costs a fraction of a full-size decode.
                    image.draft("RGB", (512, 512))
                image.load()
        except ValidationError:
            raise
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
            raise ValidationError(
                "The image is too large: at most %(max)s million pixels are accepted.",
                code="too_many_pixels",
                params={"max": f"{max_pixels / 1_000_000:g}"},
            ) from None
        except UnidentifiedImageError:
            raise ValidationError(
                "The file is not an image that can be read (accepted formats: %(allowed)s).",
                code="not_an_image",
                params={"allowed": ", ".join(sorted(ALLOWED_FORMATS))},
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ValidationError(
                "The image is damaged or incomplete and cannot be decoded (%(error)s).",
                code="corrupt",
                params={"error": str(error) or type(error).__name__},
            ) from None
        finally:
            PILImage.MAX_IMAGE_PIXELS = previous_limit
            upload.seek(0)
    return image_format, width, height


def inspect_image(upload) -> ImageFacts:
    """Validate an uploaded file and describe it, or raise ValidationError saying why not."""
    size = upload.size
    if not size:
        raise ValidationError("The file is empty.", code="empty")
    max_bytes = settings.IMAGE_MAX_UPLOAD_BYTES
    if size > max_bytes:
        raise ValidationError(
            "The file is too large (%(size)s); the limit is %(max)s.",
            code="too_large",
            params={"size": filesizeformat(size), "max": filesizeformat(max_bytes)},
        )
    image_format, width, height = _decode_fully(upload, settings.IMAGE_MAX_PIXELS)
    return ImageFacts(format=image_format, width=width, height=height, file_size=size, sha256=file_sha256(upload))
