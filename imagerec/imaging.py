"""Decoding image files into the upright RGB picture a person would see (Pillow only).

The one place that opens image files: upload validation and thumbnails (gallery) and the
embedding worker (similarity) all come here, so they agree on what a file looks like.

- EXIF orientation is applied, so a photo taken sideways is upright; the reported width and
  height are those of the upright picture, whatever the format.
- Animated GIF/WebP and multi-page TIFF: the first frame.
- Palette, grayscale and CMYK images are converted to RGB; 16-bit and 32-bit grayscale are
  scaled to 8 bits; transparency is composited on white, as the site's pages show it.
- Large JPEGs can be decoded at reduced scale (Pillow's ``draft``, DCT scaling) to at least
  ``draft_min_side`` pixels on the shorter side: the network needs 224x224 and a thumbnail
  640, so a 24-megapixel photo costs little more than a small one. The embedding of a
  drafted decode stays within ``DRAFT_COSINE_TOLERANCE`` of the full decode (tested).

Safe to call from many threads at once: nothing here changes process-wide state per call.
Pillow's own decompression-bomb limit is set once per process by ``configure_pillow`` (from
``GalleryConfig.ready``), and each call checks the pixel count explicitly after opening.
"""

from __future__ import annotations

import ctypes
import glob
import os
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Twice the 256-pixel resize of the ImageNet transform, so the final resize still averages.
DRAFT_MIN_SIDE = 512
DRAFT_COSINE_TOLERANCE = 0.01
WHITE = (255, 255, 255)


class UndecodableImage(ValueError):
    """The file cannot be turned into a picture; retrying will not help.

    ``detail`` is the decoder's own words, for messages that give the reason in their own way.
    """

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


class NotAnImage(UndecodableImage):
    """Nothing in the file is recognisable as a picture."""


class TooManyPixels(UndecodableImage):
    """More pixels than the limit: refused before the pixels are decoded."""

    def __init__(self, max_pixels: int, pixels: int | None = None):
        self.pixels, self.max_pixels = pixels, max_pixels
        counted = f"{pixels:,} pixels, " if pixels else ""
        super().__init__(f"The image has too many pixels to process safely ({counted}the limit is {max_pixels:,}).")


class UnsupportedFormat(UndecodableImage):
    """A picture Pillow can read, but of a format the caller does not accept."""

    def __init__(self, image_format: str):
        self.format = image_format
        super().__init__(f"{image_format or 'This'} images are not accepted.")


def configure_pillow(*, max_pixels: int) -> None:
    """Set Pillow's process-wide behaviour, once, at start-up.

    Pillow refuses images over twice ``max_pixels`` in ``Image.open``; between one and two
    times it only warns, so the warning is silenced and every call checks the limit itself.
    Pillow's warnings about malformed metadata ("Corrupt EXIF data") and libtiff's messages
    on standard error say nothing the caller does not learn from the decode itself (a file
    that cannot be read is refused with the reason), and would spill over progress bars.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    _silence_libtiff()


def _silence_libtiff() -> None:
    """libtiff prints its warnings and errors to standard error; the errors still reach us."""
    import PIL

    found = glob.glob(os.path.join(os.path.dirname(PIL.__file__), os.pardir, "pillow.libs", "libtiff*.so*"))
    try:
        libtiff = ctypes.CDLL(found[0] if found else "libtiff.so.6")
        libtiff.TIFFSetWarningHandler(None)
        libtiff.TIFFSetErrorHandler(None)
    except (OSError, AttributeError):
        pass  # another build of Pillow: its messages stay on standard error, nothing else changes


@dataclass(frozen=True)
class Decoded:
    """A decoded file: the upright RGB picture and the facts about the file it came from."""

    picture: Image.Image
    format: str
    width: int  # of the upright picture at full resolution, even when decoded at reduced scale
    height: int


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Scale the full 16-bit range down, rather than clipping everything above 255.
        scale = 1 / 256 if image.mode.startswith("I;16") or image.getextrema()[1] <= 65535 else 1 / 2**24
        image = image.convert("I").point(lambda value: value * scale).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _turned(before: tuple[int, int], after: tuple[int, int]) -> bool:
    """Whether ``after`` is ``before`` turned a quarter (allowing for a reduced-scale decode)."""
    (width, height), (new_width, new_height) = before, after
    if width == height:
        return False
    aspect = new_width / max(new_height, 1)
    return abs(aspect - height / width) < abs(aspect - width / height)


def decode(
    source,
    *,
    max_pixels: int | None = None,
    draft_min_side: int | None = DRAFT_MIN_SIDE,
    allowed_formats: frozenset[str] | None = None,
    strict: bool = False,
) -> Decoded:
    """Decode ``source`` (a path or a binary file) into an upright RGB picture.

    ``max_pixels`` defaults to the limit ``configure_pillow`` set. ``draft_min_side=None``
    decodes JPEGs at full scale. Raises UndecodableImage, or one of its kinds: NotAnImage,
    TooManyPixels, or UnsupportedFormat when the file is not one of ``allowed_formats``.
    ``strict`` (upload validation) also refuses TIFFs whose compressed data is cut short,
    which libtiff reports only as a warning while it returns a partly decoded picture.
    """
    max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(source) as image:
            image_format = image.format or ""
            if allowed_formats is not None and image_format not in allowed_formats:
                raise UnsupportedFormat(image_format)
            stored_size = image.size
            if max_pixels and stored_size[0] * stored_size[1] > max_pixels:
                raise TooManyPixels(max_pixels, stored_size[0] * stored_size[1])
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            if draft_min_side and image_format == "JPEG":
                shorter = min(stored_size)
                if shorter > draft_min_side:
                    scale = draft_min_side / shorter
                    image.draft("RGB", (max(1, round(stored_size[0] * scale)), max(1, round(stored_size[1] * scale))))
            image.load()
            if strict and image_format == "TIFF":
                damage = _tiff_damage(image, source)
                if damage:
                    raise UndecodableImage(f"The image cannot be decoded: {damage}.", damage)
            # Always a new image (transposed, or a copy), so its pixels outlive the file.
            upright = _to_rgb(ImageOps.exif_transpose(image))
    except UndecodableImage:
        raise
    except UnidentifiedImageError:
        raise NotAnImage("The image cannot be decoded: the file is not a picture in a format Pillow reads.") from None
    except Image.DecompressionBombError:
        # Over twice Pillow's own limit: refused by Image.open before the size is known to us.
        raise TooManyPixels(Image.MAX_IMAGE_PIXELS or max_pixels) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        detail = str(error) or type(error).__name__
        if detail.startswith("decoder error"):
            detail = "the compressed picture data is damaged"
        raise UndecodableImage(f"The image cannot be decoded: {detail}.", detail) from None
    width, height = stored_size
    if _turned(stored_size, upright.size):
        width, height = height, width
    return Decoded(picture=upright, format=image_format, width=width, height=height)


DEFLATE = (8, 32946)
JPEG_IN_TIFF = 7


def _tiff_damage(image: Image.Image, source) -> str | None:
    """Why the TIFF's strips or tiles cannot all be whole, or None.

    Checks what libtiff lets pass: every strip inside the file, every deflate stream
    complete, every JPEG strip ending with its end-of-image marker.
    """
    tags = image.tag_v2
    compression = tags.get(259, 1)
    offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)
    if not offsets or not counts:
        return None
    handle = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
    try:
        end = handle.seek(0, os.SEEK_END)
        for offset, count in zip(offsets, counts):
            if offset + count > end:
                return "the picture data is cut short"
            if compression not in DEFLATE and compression != JPEG_IN_TIFF:
                continue
            handle.seek(offset)
            chunk = handle.read(count)
            if compression == JPEG_IN_TIFF and b"\xff\xd9" not in chunk:
                return "the compressed picture data ends early"
            if compression in DEFLATE:
                stream = zlib.decompressobj()
                try:
                    stream.decompress(chunk)
                except zlib.error:
                    return "the compressed picture data is damaged"
                if not stream.eof:
                    return "the compressed picture data ends early"
    finally:
        if handle is not source:
            handle.close()
    return None


def load_rgb(source, *, max_pixels: int | None = None, draft_min_side: int | None = DRAFT_MIN_SIDE) -> Image.Image:
    """The upright RGB picture of ``source`` (see ``decode``)."""
    return decode(source, max_pixels=max_pixels, draft_min_side=draft_min_side).picture


def synthetic_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic picture with photo-like structure: smooth colour fields, shapes, grain.

    Different seeds give clearly different pictures; the same seed always the same one.
    Used to calibrate randomly initialised networks and to make test images.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.zeros((height, width, 3), dtype=np.float32)
    for channel in range(3):
        fx, fy = rng.uniform(0.5, 4.0, size=2) * 2 * np.pi
        phase = rng.uniform(0, 2 * np.pi)
        picture[..., channel] = 127 + 100 * np.sin(fx * x / width + fy * y / height + phase)
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.3) * min(width, height)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < radius**2
        picture[mask] = rng.uniform(0, 255, size=3)
    picture += rng.normal(0, 6, size=picture.shape)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")
