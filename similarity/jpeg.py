"""What a JPEG's header says, read without decoding it: may the GPU decode it, and which way is up.

The GPU worker decodes baseline JPEGs (8-bit, Huffman-coded, grey or YCbCr) with nvJPEG
(``torchvision.io.decode_jpeg(..., device="cuda")``), whose batched call hands them to the
GPU's hardware decoder. Anything else goes through Pillow on the decode threads, as on a CPU
worker: progressive and extended-sequential JPEGs (nvJPEG takes them, but torchvision then
decodes them one at a time on one CPU core under a process-wide lock, about ten times slower
than Pillow on all the cores), CMYK and YCCK, Adobe RGB-coded, 12-bit, lossless or
arithmetic-coded JPEGs, every other format, and a file whose header this module cannot make
sense of: when in doubt, Pillow decides.

The EXIF orientation is the one Pillow's ``ImageOps.exif_transpose`` applies (the first
Exif segment, parsed by Pillow's own ``Image.Exif``; else an XMP ``tiff:Orientation``), so
both paths turn a photo the same way up. Pure Python and bytes: no decoding, no torch.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from PIL import ExifTags, Image

# The start-of-frame marker the GPU's hardware decoder takes: baseline. SOF1 (extended) and
# SOF2 (progressive) go to Pillow, which is faster for them (see above); SOF3 (lossless),
# SOF5-7 (hierarchical) and SOF9-15 (arithmetic) nvJPEG cannot decode at all.
DEVICE_FRAMES = {0xC0: "baseline"}
# C4 (DHT), C8 (reserved) and CC (DAC) share the range but are not frames.
ALL_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}
EXIF_PREFIX = b"Exif\x00\x00"
XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')


@dataclass(frozen=True)
class JpegHeader:
    """The facts the GPU path needs about a JPEG the GPU may decode."""

    width: int  # as stored, before the orientation is applied
    height: int
    orientation: int  # EXIF orientation, 1 (upright) to 8
    frame: str  # "baseline": the only frame the GPU path takes
    components: int  # 1 (grey) or 3 (YCbCr)


def _orientation(exif: bytes | None, xmp: bytes | None) -> int:
    """Pillow's own reading (Image.getexif): Exif first, XMP when Exif has no orientation."""
    orientation = None
    if exif is not None:
        parsed = Image.Exif()
        parsed.load(exif)
        orientation = parsed.get(ExifTags.Base.Orientation)
    if orientation is None and xmp:
        match = XMP_ORIENTATION.search(xmp)
        orientation = int(match[2]) if match else None
    # exif_transpose leaves the picture as it is for anything but 2..8.
    return orientation if isinstance(orientation, int) and 2 <= orientation <= 8 else 1


def device_decodable(data: bytes | bytearray, *, max_pixels: int | None = None) -> JpegHeader | None:
    """The header of a JPEG the GPU can decode as Pillow would; None sends the file to Pillow.

    Also None for a picture over ``max_pixels``, so Pillow refuses it with its usual reason.
    """
    if data[:2] != b"\xff\xd8":
        return None
    view = memoryview(data)
    position, size = 2, len(data)
    exif = xmp = None
    adobe_transform = None
    frame = None
    try:
        while position < size:
            if data[position] != 0xFF:
                return None  # not where a marker should be: let Pillow judge the file
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte before a marker
                position += 1
                continue
            position += 2
            if marker in STANDALONE:
                continue
            if marker == 0xD9:  # end of image before any scan
                return None
            (length,) = struct.unpack_from(">H", data, position)
            segment = bytes(view[position + 2 : position + length])
            if len(segment) != length - 2:
                return None  # truncated header
            position += length
            if marker == 0xE1 and segment.startswith(EXIF_PREFIX):
                # As Pillow does: the first Exif segment, continued by any later ones.
                exif = segment if exif is None else exif + segment[6:]
            elif marker == 0xE1 and segment.startswith(XMP_PREFIX):
                xmp = segment.split(b"\x00", 1)[1]
            elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
                adobe_transform = segment[11]
            elif marker in ALL_FRAMES:
                if frame is not None or marker not in DEVICE_FRAMES:
                    return None
                precision, height, width, components = struct.unpack_from(">BHHB", segment)
                frame = (DEVICE_FRAMES[marker], precision, width, height, components)
            elif marker == 0xDA:  # start of scan: the header is over
                break
        else:
            return None
        if frame is None:
            return None
        kind, precision, width, height, components = frame
        if precision != 8 or components not in (1, 3) or not width or not height:
            return None
        if components == 3 and adobe_transform == 0:
            return None  # colours stored as RGB, not YCbCr: Pillow knows what to do
        if max_pixels and width * height > max_pixels:
            return None
        orientation = _orientation(exif, xmp)
    except (struct.error, IndexError, ValueError, SyntaxError, OSError):
        return None  # a header Pillow may still read, or refuse with its own reason
    return JpegHeader(width=width, height=height, orientation=orientation, frame=kind, components=components)
