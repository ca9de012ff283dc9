"""Upload validation: an image is accepted only if it decodes, whatever its name claims.

Follows OWASP's file-upload advice: an allow-list of formats checked by decoding the bytes,
size and pixel limits (decompression bombs included), and a cleaned display name.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat

import imaging

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
ORIGINAL_NAME_MAX_LENGTH = 200


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


def _decode_fully(upload, max_pixels: int) -> imaging.Decoded:
    """Decode every byte (a JPEG at reduced scale: truncation still shows)."""
    upload.seek(0)
    try:
        decoded = imaging.decode(upload, max_pixels=max_pixels, allowed_formats=ALLOWED_FORMATS, strict=True)
    except imaging.UnsupportedFormat as error:
        raise ValidationError(
            "%(format)s images are not accepted. Accepted formats: %(allowed)s.",
            code="format",
            params={"format": error.format, "allowed": ", ".join(sorted(ALLOWED_FORMATS))},
        ) from None
    except imaging.TooManyPixels:
        raise ValidationError(
            "The image is too large: at most %(max)s million pixels are accepted.",
            code="too_many_pixels",
            params={"max": f"{max_pixels / 1_000_000:g}"},
        ) from None
    except imaging.NotAnImage:
        raise ValidationError(
            "The file is not an image that can be read (accepted formats: %(allowed)s).",
            code="not_an_image",
            params={"allowed": ", ".join(sorted(ALLOWED_FORMATS))},
        ) from None
    except imaging.UndecodableImage as error:
        raise ValidationError(
            "The image is damaged or incomplete and cannot be decoded (%(error)s).",
            code="corrupt",
            params={"error": error.detail},
        ) from None
    finally:
        upload.seek(0)
    return decoded


def inspect_image(upload) -> ImageFacts:
    """Validate an uploaded file and describe it, or raise ValidationError saying why not."""
    decoded = _validated_decode(upload)
    return ImageFacts(
        format=decoded.format, width=decoded.width, height=decoded.height, file_size=upload.size,
        sha256=file_sha256(upload),
    )


def picture_validate(upload):
    """The upright RGB picture of an upload judged like any other (a visitor's search photo)."""
    return _validated_decode(upload).picture


def _validated_decode(upload) -> imaging.Decoded:
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
    return _decode_fully(upload, settings.IMAGE_MAX_PIXELS)
