"""Upload validation: only files that decode as an accepted format get in, and why not is said."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from gallery.validation import ORIGINAL_NAME_MAX_LENGTH, clean_original_name, inspect_image


def image_bytes(image_format: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **options) -> bytes:
    rng = np.random.default_rng(0)
    width, height = size
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, image_format, **options)
    return buffer.getvalue()


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/jpeg")


def rejection(uploaded) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        inspect_image(uploaded)
    return raised.value


# --- Accepted files ---------------------------------------------------------------------


def test_valid_png_is_described():
    content = image_bytes("PNG", size=(64, 48))
    uploaded = upload("holiday.png", content)

    facts = inspect_image(uploaded)

    assert (facts.format, facts.width, facts.height) == ("PNG", 64, 48)
    assert facts.file_size == len(content)
    assert facts.sha256 == hashlib.sha256(content).hexdigest()
    # The file is left ready to be stored whole.
    assert uploaded.read() == content


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_every_format_turned_by_its_orientation_tag_is_described_upright(image_format, orientation):
    if image_format == "TIFF":  # TIFF keeps the orientation as a tag of its own
        content = image_bytes("TIFF", size=(590, 88), tiffinfo={0x0112: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        content = image_bytes(image_format, size=(590, 88), exif=exif.tobytes())

    facts = inspect_image(upload("turned", content))

    # The size pages show is that of the picture as displayed: 88 wide, 590 tall.
    assert (facts.width, facts.height) == (88, 590)


def test_a_photo_taken_sideways_is_described_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    content = image_bytes("JPEG", size=(64, 48), exif=exif.tobytes())

    facts = inspect_image(upload("sideways.jpg", content))

    # Pages lay the picture out upright, so its recorded size is the upright one.
    assert (facts.width, facts.height) == (48, 64)


@pytest.mark.parametrize(
    ("image_format", "mode", "options"),
    [
        ("JPEG", "RGB", {}),
        ("WEBP", "RGB", {}),
        ("GIF", "P", {}),
        ("BMP", "RGB", {}),
        ("TIFF", "RGB", {}),
        ("JPEG", "RGB", {"progressive": True}),
    ],
)
def test_every_accepted_format_passes(image_format, mode, options):
    facts = inspect_image(upload("picture", image_bytes(image_format, size=(600, 550), mode=mode, **options)))

    assert (facts.format, facts.width, facts.height) == (image_format, 600, 550)


def test_the_name_does_not_decide_the_format():
    facts = inspect_image(upload("really-a-png.jpg", image_bytes("PNG")))

    assert facts.format == "PNG"


# --- Rejected files ---------------------------------------------------------------------


def test_empty_file_is_rejected():
    error = rejection(upload("empty.jpg", b""))

    assert error.code == "empty"
    assert error.messages == ["The file is empty."]


def test_text_file_named_like_a_jpeg_is_rejected():
    error = rejection(upload("x.jpg", b"I am a shopping list, not a photo.\n" * 10))

    assert error.code == "not_an_image"
    assert "not an image" in error.messages[0]
    assert "JPEG" in error.messages[0]  # says what would be accepted


def damaged_tiff(compression: str) -> bytes:
    """A TIFF whose last strip's compressed data ends early: libtiff only warns about it."""
    content = bytearray(image_bytes("TIFF", size=(400, 300), compression=compression))
    with Image.open(io.BytesIO(bytes(content))) as image:
        offset, count = image.tag_v2[273][-1], image.tag_v2[279][-1]
    content[offset + count // 2 : offset + count] = bytes(count - count // 2)
    return bytes(content)


@pytest.mark.parametrize("compression", ["tiff_adobe_deflate", "jpeg", "tiff_lzw"])
def test_a_tiff_with_damaged_compressed_data_is_refused_with_the_reason(compression):
    error = rejection(upload("scan.tif", damaged_tiff(compression)))
    assert error.code == "corrupt"
    assert "compressed picture data" in error.messages[0]


@pytest.mark.parametrize("size", [(64, 48), (1200, 900)])  # fully decoded and drafted
def test_truncated_jpeg_is_rejected(size):
    content = image_bytes("JPEG", size=size)

    error = rejection(upload("cut.jpg", content[: len(content) // 2]))

    assert error.code == "corrupt"
    assert "damaged or incomplete" in error.messages[0]


def test_file_over_the_byte_limit_is_rejected(settings):
    content = image_bytes("PNG")
    settings.IMAGE_MAX_UPLOAD_BYTES = 1024

    error = rejection(upload("big.png", content))

    assert error.code == "too_large"
    assert error.messages[0].startswith("The file is too large")
    assert "the limit is 1.0\xa0KB" in error.messages[0]


def test_file_at_the_byte_limit_is_accepted(settings):
    content = image_bytes("PNG")
    settings.IMAGE_MAX_UPLOAD_BYTES = len(content)

    assert inspect_image(upload("exact.png", content)).file_size == len(content)


@pytest.mark.parametrize(
    "size",
    [
        (40, 30),  # 1,200 pixels: over twice the limit, where Pillow refuses outright
        (30, 25),  # 750 pixels: over the limit but under twice it, where Pillow only warns
        (501, 1),  # one pixel over
    ],
)
def test_image_with_too_many_pixels_is_rejected(settings, size):
    limit_before = Image.MAX_IMAGE_PIXELS
    settings.IMAGE_MAX_PIXELS = 500

    error = rejection(upload("wide.png", image_bytes("PNG", size=size)))

    assert error.code == "too_many_pixels"
    assert error.messages == ["The image is too large: at most 0.0005 million pixels are accepted."]
    # The process-wide Pillow limit is restored afterwards.
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_image_at_the_pixel_limit_is_accepted(settings):
    settings.IMAGE_MAX_PIXELS = 500

    assert inspect_image(upload("fits.png", image_bytes("PNG", size=(500, 1)))).width == 500


@pytest.mark.parametrize(("image_format", "name"), [("ICO", "favicon.ico"), ("PPM", "picture.jpg")])
def test_format_outside_the_allow_list_is_rejected(image_format, name):
    error = rejection(upload(name, image_bytes(image_format, size=(32, 32))))

    assert error.code == "format"
    assert error.messages[0].startswith(f"{image_format} images are not accepted.")
    assert "BMP, GIF, JPEG, PNG, TIFF, WEBP" in error.messages[0]


# --- Display names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("holiday.jpg", "holiday.jpg"),
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("C:\\Users\\ann\\Pictures\\cat.png", "cat.png"),
        ("/absolute/path/dog.webp", "dog.webp"),
        ("bad\x00na\x1bme\n.jpg", "badname.jpg"),
        ("evil\u202egpj.exe", "evilgpj.exe"),  # a right-to-left override would disguise the name
        ("  spaced.png  ", "spaced.png"),
        ("Café Ωmega.jpg", "Café Ωmega.jpg"),
        ("", "unnamed"),
        ("../", "unnamed"),
        ("\x07\x08", "unnamed"),
    ],
)
def test_original_name_is_cleaned_for_display(name, expected):
    assert clean_original_name(name) == expected


def test_long_original_name_is_shortened_keeping_its_extension():
    cleaned = clean_original_name("a" * 300 + ".jpeg")

    assert len(cleaned) == ORIGINAL_NAME_MAX_LENGTH
    assert cleaned == "a" * (ORIGINAL_NAME_MAX_LENGTH - 5) + ".jpeg"


@pytest.mark.parametrize("name", ["a." + "b" * 250, "x" * 5000, "." + "c" * 300])
def test_original_name_never_exceeds_the_limit(name):
    cleaned = clean_original_name(name)

    assert 0 < len(cleaned) <= ORIGINAL_NAME_MAX_LENGTH
    assert cleaned[0] == name[0]


def tiff_missing(tag: int) -> bytes:
    import struct

    content = bytearray(image_bytes("TIFF"))
    directory = struct.unpack_from("<I", content, 4)[0]
    for index in range(struct.unpack_from("<H", content, directory)[0]):
        entry = directory + 2 + 12 * index
        if struct.unpack_from("<H", content, entry)[0] == tag:
            struct.pack_into("<H", content, entry, 65000 + index)
    return bytes(content)


@pytest.mark.parametrize("tag", [256, 257], ids=["no ImageWidth", "no ImageLength"])
def test_a_tiff_whose_header_cannot_be_read_is_refused_as_damaged_not_as_a_stranger(tag):
    error = rejection(upload("scan.tif", tiff_missing(tag)))

    assert error.code == "corrupt"
    assert "damaged or incomplete" in error.messages[0] and "TIFF" in error.messages[0]
