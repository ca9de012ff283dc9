"""Decoding image files into the upright RGB picture a person would see (Pillow only).

The one place that opens image files: upload validation and thumbnails (gallery) and the
embedding worker (similarity) all come here, so they agree on what a file looks like.

- EXIF orientation is applied, so a photo taken sideways is upright; the reported width and
  height are those of the upright picture, whatever the format.
- Animated GIF/WebP and multi-page TIFF: the first frame.
- Palette, grayscale and CMYK images are converted to RGB; 16-bit and 32-bit grayscale are
  scaled to 8 bits; transparency is composited on white, as the site's pages show it.
- Colours are converted to sRGB from an embedded ICC profile (RGB, CMYK or grey), and the
  picture carries pixels only: no profile, EXIF, XMP, comment or text travels with it.
- Large JPEGs can be decoded at reduced scale (Pillow's ``draft``, DCT scaling) to at least
  ``draft_min_side`` pixels on the shorter side: the network needs 224x224 and a thumbnail
  640, so a 24-megapixel photo costs little more than a small one. The embedding of a
  drafted decode stays within ``DRAFT_COSINE_TOLERANCE`` of the full decode (tested).

Safe to call from many threads at once: nothing here changes process-wide state per call.
Pillow's own decompression-bomb limit is set once per process by ``configure_pillow`` (from
``GalleryConfig.ready``), and each call checks the pixel count explicitly after opening.
The checks of TIFFs that libtiff decodes only in part (``strict``) are in ``imaging.tiff``.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from . import tiff

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
    Pillow's warnings about malformed metadata ("Corrupt EXIF data") say nothing the caller
    does not learn from the decode itself, and would spill over progress bars; libtiff's
    messages are taken off standard error and kept for the decode that caused them.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    tiff.install_libtiff_handlers()


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


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# The colour space an embedded profile must describe to apply to pixels of each mode.
PROFILE_SPACES = {"RGB": "RGB", "CMYK": "CMYK", "L": "GRAY"}


@functools.lru_cache(maxsize=64)
def _transform_to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A colour transform from the profile to sRGB, or None when it does not fit the pixels.

    Built once per distinct profile (a camera's photos share one), and without lcms's
    one-pixel cache, which is what makes a transform unsafe to share between threads.
    """
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if source.profile.xcolor_space.strip() != PROFILE_SPACES[mode]:
            return None
        return ImageCms.buildTransform(source, _srgb_profile(), mode, "RGB", flags=ImageCms.Flags.NOCACHE)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # a damaged or unusual profile: the pixels are taken as they are


# EXIF orientation -> the transposition that makes the picture upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image) -> Image.Image:
    """A new image, turned as its EXIF orientation says.

    Not ``ImageOps.exif_transpose``: the image it returns keeps the file's EXIF loaded in a
    private cache, which emptying ``info`` does not clear.
    """
    method = UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation, 1))
    return image.transpose(method) if method is not None else image.copy()


def _srgb_pixels(image: Image.Image) -> Image.Image:
    """The picture in sRGB as a new image carrying pixels only (no profile, EXIF, comment or text).

    Colours are converted from the embedded profile, so a wide-gamut, CMYK or otherwise
    tagged file looks as it does in a colour-managed viewer; transparency is composited
    first, in the file's own colour space.
    """
    icc_profile = image.info.get("icc_profile")
    transform = None
    if icc_profile and image.mode in PROFILE_SPACES:
        transform = _transform_to_srgb(icc_profile, image.mode)
    if transform is None:
        image = _to_rgb(image)
        if icc_profile and image.mode == "RGB":
            transform = _transform_to_srgb(icc_profile, "RGB")
    try:
        picture = transform.apply(image) if transform is not None else image
    except (ImageCms.PyCMSError, OSError, ValueError):
        picture = image
    picture = picture if picture.mode == "RGB" else picture.convert("RGB")
    # Pillow carries ``info`` through every operation and writes parts of it back on save.
    # ``picture`` is always a new image (``_upright`` copies), so emptying it is enough:
    # copying the pixels again (frombytes) cost a deep-queue worker a tenth of its rate.
    picture.info = {}
    return picture


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
    TooManyPixels, or UnsupportedFormat when the file is not one of ``allowed_formats``;
    nothing else, whatever the bytes.
    ``strict`` (upload validation) also refuses TIFFs that libtiff decodes only in part:
    compressed data cut short or damaged, which libtiff reports as a warning or an error
    (or not at all, for a fax strip that ends early) while it returns a picture with holes.
    """
    max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if strict:
        tiff.install_libtiff_handlers()
    try:
        with tiff.libtiff_messages() as libtiff_messages, Image.open(source) as image:
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
                damage = tiff.libtiff_damage(libtiff_messages) or tiff.tiff_damage(image, source)
                if damage:
                    raise UndecodableImage(f"The image cannot be decoded: {damage}.", damage)
            # Always a new image, so its pixels outlive the file.
            upright = _srgb_pixels(_upright(image))
    except UndecodableImage:
        raise
    except UnidentifiedImageError:
        claimed = _claimed_format(source)
        if claimed and (allowed_formats is None or claimed in allowed_formats):
            # It starts like a picture of an accepted format but its header cannot be read
            # (a TIFF without ImageWidth): damaged, not a stranger to us.
            detail = f"the {claimed} header is damaged or incomplete"
            raise UndecodableImage(f"The image cannot be decoded: {detail}.", detail) from None
        raise NotAnImage("The image cannot be decoded: the file is not a picture in a format Pillow reads.") from None
    except Image.DecompressionBombError:
        # Over twice Pillow's own limit: refused by Image.open before the size is known to us.
        raise TooManyPixels(Image.MAX_IMAGE_PIXELS or max_pixels) from None
    except Exception as error:
        # The decoder's boundary. Hostile or damaged bytes make Pillow and its codecs raise
        # whatever their parsing code meets (TypeError for a TIFF without ImageWidth, KeyError,
        # IndexError, struct.error, ZeroDivisionError, SyntaxError...), and no list of kinds
        # stays complete: every one of them means the file cannot be decoded.
        detail = str(error) or type(error).__name__
        if detail.startswith("decoder error"):
            detail = "the compressed picture data is damaged"
        raise UndecodableImage(f"The image cannot be decoded: {detail}.", detail) from None
    width, height = stored_size
    if _turned(stored_size, upright.size):
        width, height = height, width
    return Decoded(picture=upright, format=image_format, width=width, height=height)


def _claimed_format(source) -> str | None:
    """The format whose signature ``source`` starts with (Pillow's own test), or None."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                prefix = handle.read(16)
        else:
            position = source.tell()
            source.seek(0)
            prefix = source.read(16)
            source.seek(position)
        Image.init()
        for image_format, (_, accept) in Image.OPEN.items():
            verdict = accept(prefix) if accept is not None else False
            if verdict and not isinstance(verdict, str):  # a string is Pillow's "close, but no"
                return image_format
    except Exception:  # noqa: BLE001 - only a better reason is at stake
        pass
    return None


def load_rgb(source, *, max_pixels: int | None = None, draft_min_side: int | None = DRAFT_MIN_SIDE) -> Image.Image:
    """The upright RGB picture of ``source`` (see ``decode``)."""
    return decode(source, max_pixels=max_pixels, draft_min_side=draft_min_side).picture
