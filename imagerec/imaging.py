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
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import io
import os
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

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
    _install_libtiff_handlers()


# libtiff reports through process-wide handlers, called on the thread that decodes. Each
# decode collects the messages of its own thread only, so threads never see each other's.
_libtiff_reports = threading.local()
_PRINTF_CONVERSION = re.compile(r"%[-+ #0-9.*]*[hljztL]*[a-zA-Z%]")
# void (*)(const char *module, const char *fmt, va_list): the format string, unformatted,
# says what went wrong well enough; formatting a va_list from Python is not portable.
_LIBTIFF_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


def _libtiff_handler(severity: str):
    def record(module: bytes | None, message: bytes | None, _arguments) -> None:
        messages = getattr(_libtiff_reports, "messages", None)
        if messages is not None:
            messages.append(
                (severity, (module or b"").decode("utf-8", "replace"), (message or b"").decode("utf-8", "replace"))
            )

    return _LIBTIFF_HANDLER(record)


# Module-level, so ctypes keeps the callbacks alive for as long as libtiff may call them.
_ON_LIBTIFF_WARNING = _libtiff_handler("warning")
_ON_LIBTIFF_ERROR = _libtiff_handler("error")


@functools.cache
def _install_libtiff_handlers() -> bool:
    """Route libtiff's warnings and errors to ``_libtiff_reports`` (once per process).

    Without it libtiff prints them on standard error, where nobody can tell which file
    they were about. Returns whether Pillow's libtiff was found.
    """
    import PIL

    found = glob.glob(os.path.join(os.path.dirname(PIL.__file__), os.pardir, "pillow.libs", "libtiff*.so*"))
    try:
        libtiff = ctypes.CDLL(found[0] if found else "libtiff.so.6")
        libtiff.TIFFSetWarningHandler.argtypes = [_LIBTIFF_HANDLER]
        libtiff.TIFFSetErrorHandler.argtypes = [_LIBTIFF_HANDLER]
        libtiff.TIFFSetWarningHandler.restype = libtiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
        libtiff.TIFFSetWarningHandler(_ON_LIBTIFF_WARNING)
        libtiff.TIFFSetErrorHandler(_ON_LIBTIFF_ERROR)
    except (OSError, AttributeError):
        return False  # another build of Pillow: its messages stay on standard error
    return True


@contextlib.contextmanager
def _libtiff_messages():
    """The (severity, module, message) triples libtiff reports on this thread meanwhile."""
    outer = getattr(_libtiff_reports, "messages", None)
    _libtiff_reports.messages = messages = []
    try:
        yield messages
    finally:
        _libtiff_reports.messages = outer


def _libtiff_damage(messages) -> str | None:
    """The first libtiff message that means the picture data is damaged, or None.

    Every error counts: damaged fax data draws "Bad code word" errors, yet libtiff returns
    a picture with the rows it could not read left blank. A warning counts only when a codec
    gave it while decoding pixels (its module names a decoder, such as Fax3Decode2D or
    LZWDecode, or is libjpeg inside a TIFF: "Premature EOF", "Line length mismatch", "Corrupt
    JPEG data"). Warnings about the directory ("Unknown field with tag", an ASCII value
    without its NUL, an unsorted directory) concern metadata that decoding does not need and
    valid files from many writers draw them; Pillow silences libtiff's warnings while it
    reads the directory anyway (briefly, process-wide: a codec warning of another thread in
    that moment is lost, its errors are not).
    """
    for severity, module, message in messages:
        if severity == "error" or "Decode" in module or module == "JPEGLib":
            # The arguments stay unformatted (see _LIBTIFF_HANDLER): show where they go.
            return "the picture data is damaged (libtiff: " + _PRINTF_CONVERSION.sub("…", message).strip() + ")"
    return None


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
    return Image.frombytes("RGB", picture.size, picture.tobytes())


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
        _install_libtiff_handlers()
    try:
        with _libtiff_messages() as libtiff_messages, Image.open(source) as image:
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
                damage = _libtiff_damage(libtiff_messages) or _tiff_damage(image, source)
                if damage:
                    raise UndecodableImage(f"The image cannot be decoded: {damage}.", damage)
            # Always a new image, so its pixels outlive the file.
            upright = _srgb_pixels(ImageOps.exif_transpose(image))
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


DEFLATE = (8, 32946)
JPEG_IN_TIFF = 7
FAX = (2, 3, 4)  # CCITT modified Huffman, T.4 and T.6
# Bytes that no intact strip's decoder ever reaches (see _fax_strip_short): random, so
# that a decoder that does read them draws something other than blank rows, or complains.
_PAST_THE_END = bytes(np.random.default_rng(15).integers(0, 256, 512, dtype=np.uint8))


def _tiff_damage(image: Image.Image, source) -> str | None:
    """Why the TIFF's strips or tiles cannot all be whole, or None.

    Checks what libtiff lets pass: every strip inside the file, every deflate stream
    complete, every JPEG strip ending with its end-of-image marker, every fax strip long
    enough for all its rows.
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
        if compression in FAX:
            handle.seek(0)
            if _fax_strip_short(image, handle.read()):
                return "the compressed picture data ends early"
    finally:
        if handle is not source:
            handle.close()
    return None


def _fax_strip_short(image: Image.Image, data: bytes) -> bool:
    """Whether the decoder of a fax (CCITT) strip stops anywhere but at the strip's end.

    libtiff's fax decoders stop silently where the data ends, or at an end-of-line code in
    the middle of a 2D strip (a run of zero bytes: a file cut short and padded), and leave
    the remaining rows blank ("don't error on badly-terminated strips"). Nothing in the data
    says how long it should be, so each strip is decoded on its own three ways: as it is;
    with bytes appended, which an intact strip's decoder never reaches (its picture stays
    the same, without a complaint); and with its last _FAX_TAIL bytes overwritten as well,
    which an intact strip's decoder reads for its last rows (its picture changes; past them
    come only an end-of-block code and padding, fewer than _FAX_TAIL bytes).
    Tiled fax files, which hardly exist, are not probed.
    """
    tags = image.tag_v2
    offsets, counts = tags.get(273), tags.get(279)
    if not offsets or not counts or len(offsets) != len(counts) or _with_one_strip(tags, b"", 1) is None:
        return False
    rows_per_strip = min(tags.get(278, image.height) or image.height, image.height)
    # Each probe costs about a millisecond: a file of thousands of one-row strips gets an
    # evenly spread sample (the last strip, where a cut-short file ends, always among them).
    spread = (len(offsets) - 1) / max(1, _FAX_STRIPS_PROBED - 1)
    probed = sorted({round(step * spread) for step in range(_FAX_STRIPS_PROBED)})
    for index in probed:
        offset, count = offsets[index], counts[index]
        rows = min(rows_per_strip, image.height - index * rows_per_strip)
        if rows <= 0:
            break
        strip = data[offset : offset + count]
        as_is = _decoded_alone(image, strip, rows)
        if as_is is None or _decoded_alone(image, strip + _PAST_THE_END, rows) != as_is:
            return True
        if count > 2 * _FAX_TAIL:
            overwritten = strip[:-_FAX_TAIL] + _PAST_THE_END[:_FAX_TAIL] + _PAST_THE_END
            if _decoded_alone(image, overwritten, rows, complaints_expected=True) == as_is:
                return True
    return False


_FAX_TAIL = 16
_FAX_STRIPS_PROBED = 256


def _decoded_alone(image: Image.Image, strip: bytes, rows: int, *, complaints_expected=False):
    """The pixels of ``strip`` decoded as a file of its own (``rows`` high, the same directory
    otherwise), or None when it cannot be decoded or libtiff complains (unless expected)."""
    patched = _with_one_strip(image.tag_v2, strip, rows)
    if patched is None:
        return None
    with _libtiff_messages() as messages:
        try:
            with Image.open(io.BytesIO(patched)) as alone:
                alone.load()
                pixels = alone.tobytes()
        except Exception:  # noqa: BLE001 - an undecodable strip is an answer too
            return None
    return None if messages and not complaints_expected else pixels


# What a fax strip's decoder reads from the directory: width, bits per sample, compression,
# photometric interpretation, fill order, samples per pixel, T4 and T6 options.
_FAX_DIRECTORY_TAGS = (256, 258, 259, 262, 266, 277, 292, 293)


def _with_one_strip(tags, strip: bytes, rows: int) -> bytes | None:
    """A TIFF of its own holding ``strip`` alone, ``rows`` high, described like the image of
    the directory ``tags`` (only what a fax decoder reads: nothing else is copied); None
    when a value does not fit."""
    values = {tag: tags[tag] for tag in _FAX_DIRECTORY_TAGS if tag in tags}
    values = {tag: value[0] if isinstance(value, tuple) else value for tag, value in values.items()}
    if not all(isinstance(value, int) and 0 <= value < 2**32 for value in values.values()):
        return None
    entries = sorted({**values, 257: rows, 278: rows, 273: 0, 279: len(strip)}.items())
    directory_size = 2 + 12 * len(entries) + 4
    entries = [(tag, 8 + directory_size if tag == 273 else value) for tag, value in entries]
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0) + strip


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
