"""JPEG headers: which files the GPU decoder gets, and the orientation Pillow would apply."""

import io
import struct

import pytest
from PIL import Image, ImageOps

from similarity.jpeg import device_decodable
from tests.conftest import encode, photo_like


def with_orientation(orientation: int, **options) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo_like(1, (64, 40)), exif=exif.tobytes(), **options)


def pillow_orientation(data: bytes) -> int:
    return Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)


def after_soi(data: bytes, segment: bytes) -> bytes:
    """The JPEG with a marker segment inserted right after its start-of-image marker."""
    return data[:2] + segment + data[2:]


def frame_offset(data: bytes, marker: int) -> int:
    return data.index(bytes([0xFF, marker]))


def test_a_baseline_jpeg_goes_to_the_gpu_with_its_size():
    baseline = device_decodable(encode(photo_like(1, (320, 240))))

    assert (baseline.frame, baseline.width, baseline.height, baseline.components) == ("baseline", 320, 240, 3)
    assert baseline.orientation == 1


def extended_sequential(data):
    # The same frame under SOF1, which libjpeg writes for 12-bit or optimised-table files.
    at = frame_offset(data, 0xC0)
    return data[: at + 1] + b"\xc1" + data[at + 2 :]


@pytest.mark.parametrize(
    "data",
    [encode(photo_like(1, (320, 240)), progressive=True), extended_sequential(encode(photo_like(1, (320, 240))))],
    ids=["progressive", "extended"],
)
def test_a_progressive_or_extended_jpeg_goes_to_pillow(data):
    # torchvision hands them to nvJPEG one at a time on one CPU core, under a process-wide
    # lock: about ten times slower than Pillow on the worker's decode threads.
    assert Image.open(io.BytesIO(data)).size == (320, 240)  # a JPEG Pillow reads
    assert device_decodable(data) is None


def test_a_grey_jpeg_goes_to_the_gpu_with_one_component():
    header = device_decodable(encode(photo_like(1).convert("L")))
    assert header.components == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_orientation_is_the_one_pillow_applies(orientation):
    data = with_orientation(orientation)
    assert device_decodable(data).orientation == pillow_orientation(data) == orientation


def test_an_orientation_only_in_xmp_counts_as_pillow_counts_it():
    xmp = b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    data = after_soi(encode(photo_like(1, (64, 40))), b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp)

    assert pillow_orientation(data) == 6
    assert device_decodable(data).orientation == 6
    # And exif_transpose really turns it: a quarter turn, so width and height swap.
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (40, 64)


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_an_orientation_pillow_ignores_is_ignored(orientation):
    assert device_decodable(with_orientation(orientation)).orientation == 1


def cmyk(data):
    return encode(photo_like(1).convert("CMYK"))


def png(data):
    return encode(photo_like(1), "PNG")


def webp(data):
    return encode(photo_like(1), "WEBP")


def arithmetic_coded(data):
    # The same frame header under the SOF9 marker (arithmetic coding), which nvJPEG lacks.
    at = frame_offset(data, 0xC0)
    return data[: at + 1] + b"\xc9" + data[at + 2 :]


def twelve_bit(data):
    at = frame_offset(data, 0xC0) + 4  # marker (2), length (2), then the sample precision
    return data[:at] + b"\x0c" + data[at + 1 :]


def rgb_coded(data):
    # An Adobe segment that says the three components are R, G, B rather than Y, Cb, Cr.
    adobe = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0)
    return after_soi(data, b"\xff\xee" + struct.pack(">H", len(adobe) + 2) + adobe)


def truncated_header(data):
    return data[:200]


def not_a_jpeg(data):
    return b"GIF89a" + data[6:]


@pytest.mark.parametrize(
    "variant", [cmyk, png, webp, arithmetic_coded, twelve_bit, rgb_coded, truncated_header, not_a_jpeg]
)
def test_everything_else_goes_to_pillow(variant):
    assert device_decodable(variant(encode(photo_like(1)))) is None


def test_a_picture_over_the_pixel_limit_goes_to_pillow_which_refuses_it():
    data = encode(photo_like(1, (320, 240)))
    assert device_decodable(data, max_pixels=320 * 240) is not None
    assert device_decodable(data, max_pixels=320 * 240 - 1) is None
