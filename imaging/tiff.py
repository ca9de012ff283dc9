"""TIFF files that libtiff decodes only in part: its messages, and the checks of what it lets pass.

libtiff reports damage through process-wide message handlers, or not at all: a strip cut
short or a fax strip that ends early still comes back as a picture, with the rows it could
not read left blank. ``decode(strict=True)`` (upload validation) refuses such files with
what is here: the messages libtiff gave while decoding the file (``libtiff_damage``) and a
check of the strips themselves (``tiff_damage``).
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
import zlib

import numpy as np
from PIL import Image

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
def install_libtiff_handlers() -> bool:
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
def libtiff_messages():
    """The (severity, module, message) triples libtiff reports on this thread meanwhile."""
    outer = getattr(_libtiff_reports, "messages", None)
    _libtiff_reports.messages = messages = []
    try:
        yield messages
    finally:
        _libtiff_reports.messages = outer


def libtiff_damage(messages) -> str | None:
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


DEFLATE = (8, 32946)
JPEG_IN_TIFF = 7
FAX = (2, 3, 4)  # CCITT modified Huffman, T.4 and T.6
# Bytes that no intact strip's decoder ever reaches (see _fax_strip_short): random, so
# that a decoder that does read them draws something other than blank rows, or complains.
_PAST_THE_END = bytes(np.random.default_rng(15).integers(0, 256, 512, dtype=np.uint8))


def tiff_damage(image: Image.Image, source) -> str | None:
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
    with libtiff_messages() as messages:
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
