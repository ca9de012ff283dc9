"""One file of each kind the site accepts: for tests that go format by format."""

from __future__ import annotations

import functools
import struct

import numpy as np
from PIL import Image

from tests.conftest import encode, photo_like

EXIF_ORIENTATION = 0x0112


def with_alpha(picture: Image.Image, seed: int) -> Image.Image:
    """The picture over a soft, uneven transparency: compositing on white shows in every pixel."""
    width, height = picture.size
    y, x = np.mgrid[0:height, 0:width]
    alpha = (127 + 120 * np.sin(x / (7 + seed % 5)) * np.cos(y / 11)).astype(np.uint8)
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def exif_rotated_jpeg(picture: Image.Image) -> bytes:
    """The picture stored lying on its side, with EXIF orientation 6 to stand it up again."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encode(picture.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())


def bmp_with_alpha(picture: Image.Image) -> bytes:
    """A 32-bit BMP whose fourth channel is alpha (BITMAPV4HEADER, BI_BITFIELDS): Pillow writes
    32-bit BMPs without an alpha mask, which readers take as opaque."""
    rgba = np.asarray(picture.convert("RGBA"))
    height, width = rgba.shape[:2]
    rows = rgba[::-1, :, [2, 1, 0, 3]].tobytes()  # bottom-up rows of B, G, R, A
    header = struct.pack(
        "<IiiHHIIiiII4I4s36x12x",
        108, width, height, 1, 32, 3, len(rows), 2835, 2835, 0, 0,
        0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000, b"BGRs",  # masks; LCS_sRGB
    )
    offset = 14 + len(header)
    return struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset) + header + rows


def sixteen_bit_png(picture: Image.Image) -> bytes:
    grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257 + np.arange(picture.width, dtype=np.uint16) % 200
    return encode(Image.fromarray(grey.astype(np.uint16)), "PNG")


def animated_gif(picture: Image.Image, seed: int) -> bytes:
    second = photo_like(seed + 1000, picture.size)  # the first frame is the picture
    return encode(picture, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def grained(picture: Image.Image, seed: int) -> Image.Image:
    """The picture with grain of its own: copies of one scene that are near, never equal."""
    noise = np.random.default_rng(seed).normal(0, 3, size=(picture.height, picture.width, 3))
    return Image.fromarray(np.clip(np.asarray(picture, dtype=np.float32) + noise, 0, 255).astype(np.uint8), "RGB")


@functools.cache
def accepted_files(scene: int = 100) -> dict[str, bytes]:
    """name -> file: one per accepted format and variant, all of one scene, each with grain of its own.

    Near-duplicates, as when the same photo is uploaded in several formats: a search with one
    of them finds it first only if its own file reaches the network as its stored copy did.
    Sizes differ, and some are large enough that a JPEG is decoded at reduced scale.
    Shared between tests: treat as read-only.
    """
    makers = {
        "baseline.jpg": lambda p, s: encode(p, "JPEG"),
        "large.jpg": lambda p, s: encode(p.resize((2400, 1800)), "JPEG"),
        "progressive.jpg": lambda p, s: encode(p, "JPEG", progressive=True),
        "cmyk.jpg": lambda p, s: encode(p.convert("CMYK"), "JPEG"),
        "exif-rotated.jpg": lambda p, s: exif_rotated_jpeg(p.resize((1600, 1200))),
        "rgb.png": lambda p, s: encode(p, "PNG"),
        "rgba.png": lambda p, s: encode(with_alpha(p, s), "PNG"),
        "palette.png": lambda p, s: encode(p.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "sixteen-bit.png": lambda p, s: sixteen_bit_png(p),
        "lossy.webp": lambda p, s: encode(p, "WEBP", quality=80),
        "alpha.webp": lambda p, s: encode(with_alpha(p, s), "WEBP", lossless=True),
        "animated.gif": animated_gif,
        "rgb.bmp": lambda p, s: encode(p, "BMP"),
        "alpha.bmp": lambda p, s: bmp_with_alpha(with_alpha(p, s)),
        "deflate.tiff": lambda p, s: encode(p, "TIFF", compression="tiff_adobe_deflate"),
    }
    picture = photo_like(scene, (480, 360))
    return {
        name: make(grained(picture, scene * 100 + index), index) for index, (name, make) in enumerate(makers.items())
    }
