"""imaging.decoding: every accepted file becomes the upright RGB picture a person would see.

Embeddings come from the test settings' random weights, under which unrelated pictures are
still close in absolute terms (cosine distances of a few hundredths), so each embedding
comparison is paired with a control: a genuinely different picture must be much further away.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageDraw

from imaging import (
    DRAFT_COSINE_TOLERANCE,
    DRAFT_MIN_SIDE,
    TooManyPixels,
    UndecodableImage,
    decode,
    load_rgb,
)
from similarity.encoders.registry import get_encoder
from tests.conftest import photo_like

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def encode(image: Image.Image, image_format: str, **options) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    buffer.seek(0)
    return buffer


def cosine_distance(first: np.ndarray, second: np.ndarray) -> float:
    # The encoder's vectors are unit length, so the dot product is the cosine.
    return float(1 - np.dot(first, second))


def pixel(image: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(image.getpixel(xy), dtype=int)


def assert_colour(image: Image.Image, xy: tuple[int, int], expected, tolerance: int = 0) -> None:
    actual = pixel(image, xy)
    assert np.abs(actual - np.asarray(expected)).max() <= tolerance, (
        f"pixel {xy} is {tuple(actual)}, expected {expected}"
    )


# --- EXIF orientation -------------------------------------------------------------------


def sideways_photo() -> Image.Image:
    """A photo as a camera held on its side stores it, with a red marker in the top-left corner."""
    image = photo_like(1, (320, 240))
    ImageDraw.Draw(image).rectangle([0, 0, 39, 39], fill=RED)
    return image


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_turns_the_picture_upright(image_format):
    stored = sideways_photo()
    # Orientation 6: the viewer must turn the stored pixels 90 degrees clockwise.
    loaded = load_rgb(encode(stored, image_format, exif=with_orientation(6), quality=95))

    assert loaded.mode == "RGB"
    assert loaded.size == (240, 320)
    # Turned clockwise, the stored top-left corner ends at the top right.
    assert_colour(loaded, (240 - 10, 10), RED, tolerance=40)
    # Every pixel matches the stored picture turned by hand, up to compression noise.
    upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270), dtype=float)
    wrong_way = np.asarray(stored.transpose(Image.Transpose.ROTATE_90), dtype=float)
    error = np.abs(np.asarray(loaded, dtype=float) - upright).mean()
    assert error < 10
    assert error < np.abs(np.asarray(loaded, dtype=float) - wrong_way).mean() / 4


def test_exif_rotated_jpeg_embeds_like_the_same_pixels_rotated_by_hand():
    stored = sideways_photo()
    sideways = encode(stored, "JPEG", exif=with_orientation(6), quality=95)
    by_hand = encode(stored.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95)
    wrong_way = encode(stored.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95)

    loaded, reference, control = get_encoder().embed([load_rgb(sideways), load_rgb(by_hand), load_rgb(wrong_way)])

    assert np.dot(loaded, reference) > 0.99
    # Under random weights 0.99 is met by almost any pair, so also demand that the picture
    # is far closer to the correctly turned one than to the same pixels turned the wrong way.
    assert cosine_distance(loaded, reference) < 0.1 * cosine_distance(reference, control)


# --- Modes ------------------------------------------------------------------------------


def palette_image() -> Image.Image:
    """Left half palette index 0 (red), right half index 1 (blue)."""
    image = Image.new("P", (8, 4), 0)
    image.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
    image.paste(1, (4, 0, 8, 4))
    return image


@pytest.mark.parametrize("image_format", ["PNG", "GIF", "BMP"])
def test_palette_image_keeps_its_colours(image_format):
    loaded = load_rgb(encode(palette_image(), image_format))

    assert loaded.mode == "RGB"
    assert_colour(loaded, (0, 0), RED)
    assert_colour(loaded, (7, 3), BLUE)


@pytest.mark.parametrize("image_format", ["PNG", "GIF"])
def test_palette_transparency_shows_white(image_format):
    loaded = load_rgb(encode(palette_image(), image_format, transparency=1))

    assert loaded.mode == "RGB"
    assert_colour(loaded, (0, 0), RED)
    assert_colour(loaded, (7, 3), WHITE)


def test_grayscale_with_alpha_is_composited_on_white():
    image = Image.new("LA", (3, 1))
    image.putdata([(0, 0), (0, 255), (0, 128)])  # black: transparent, opaque, half

    loaded = load_rgb(encode(image, "PNG"))

    assert loaded.mode == "RGB"
    assert_colour(loaded, (0, 0), WHITE)
    assert_colour(loaded, (1, 0), BLACK)
    assert_colour(loaded, (2, 0), (127, 127, 127), tolerance=1)


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "TIFF"])
def test_rgba_is_composited_on_white(image_format):
    image = Image.new("RGBA", (3, 1))
    # A fully transparent red pixel must not show its hidden colour.
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])

    loaded = load_rgb(encode(image, image_format, lossless=True))

    assert loaded.mode == "RGB"
    assert_colour(loaded, (0, 0), WHITE)
    assert_colour(loaded, (1, 0), BLUE)
    assert_colour(loaded, (2, 0), (127, 127, 127), tolerance=1)


def test_cmyk_jpeg_becomes_the_rgb_colours_it_prints_as():
    image = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # no ink: white
    image.paste((255, 0, 0, 0), (16, 0, 32, 16))  # full cyan

    loaded = load_rgb(encode(image, "JPEG", quality=95))

    assert loaded.mode == "RGB"
    assert_colour(loaded, (4, 8), WHITE, tolerance=6)
    assert_colour(loaded, (28, 8), (0, 255, 255), tolerance=6)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "TIFF", "GIF"])
def test_the_decoded_picture_carries_pixels_only(image_format, orientation):
    # Whatever the file carried (EXIF, a comment, a profile), nothing of it travels with the
    # picture into renditions, search queries or the network, turned upright or not.
    exif = Image.Exif()
    exif[0x010F] = "camera-maker-secret"
    exif[0x0112] = orientation
    options = {"comment": b"a private note"} if image_format in ("JPEG", "GIF") else {}
    if image_format != "GIF":
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    photo_like(7, (64, 48)).save(buffer, image_format, **options)

    picture = decode(io.BytesIO(buffer.getvalue())).picture

    assert picture.mode == "RGB" and picture.info == {} and not picture.getexif()


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_not_clipped(image_format):
    values = np.array([[0, 1024, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    encoded = encode(image, image_format)
    assert Image.open(encoded).mode.startswith("I;16")  # really stored as 16 bits
    encoded.seek(0)

    loaded = load_rgb(encoded)

    assert loaded.mode == "RGB"
    grey = np.asarray(loaded)[0, :, 0].astype(int)
    assert (np.asarray(loaded) == grey[None, :, None]).all()  # still grey
    assert grey[0] == 0
    assert grey[1] == pytest.approx(4, abs=1)  # dark stays dark instead of clipping to white
    assert grey[2] == pytest.approx(128, abs=1)
    assert grey[3] >= 254  # the brightest value is white


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("L", [0, 100, 255], [BLACK, (100, 100, 100), WHITE]),
        ("1", [0, 1, 0], [BLACK, WHITE, BLACK]),
    ],
)
def test_grayscale_and_bilevel_become_grey_rgb(mode, values, expected):
    image = Image.new(mode, (3, 1))
    image.putdata(values)

    loaded = load_rgb(encode(image, "PNG"))

    assert loaded.mode == "RGB"
    for x, colour in enumerate(expected):
        assert_colour(loaded, (x, 0), colour)


# --- Multi-frame files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_format", "options"),
    [("GIF", {"duration": 100, "loop": 0}), ("WEBP", {"duration": 100, "lossless": True}), ("TIFF", {})],
)
def test_first_frame_of_animations_and_multi_page_files_is_used(image_format, options):
    first, *rest = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    encoded = encode(first, image_format, save_all=True, append_images=rest, **options)
    with Image.open(encoded) as opened:
        assert opened.n_frames == 3
    encoded.seek(0)

    loaded = load_rgb(encoded)

    assert loaded.mode == "RGB"
    assert loaded.size == (16, 16)
    assert_colour(loaded, (8, 8), RED, tolerance=2)


# --- JPEG draft decoding ----------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return encode(photo_like(2, (3000, 2000)), "JPEG", quality=90).getvalue()


def test_large_jpeg_is_decoded_at_reduced_scale_without_changing_its_embedding(large_jpeg):
    drafted = load_rgb(io.BytesIO(large_jpeg))
    full = load_rgb(io.BytesIO(large_jpeg), draft_min_side=None)

    assert full.size == (3000, 2000)
    assert drafted.size[0] < 3000 and drafted.size[1] < 2000  # the draft really happened
    assert min(drafted.size) >= DRAFT_MIN_SIDE  # ...but kept enough pixels for the network
    assert drafted.size[0] * 2 == drafted.size[1] * 3  # and the aspect ratio

    different = photo_like(3, (3000 // 8, 2000 // 8))
    drafted_vector, full_vector, different_vector = get_encoder().embed([drafted, full, different])
    distance = cosine_distance(drafted_vector, full_vector)
    assert distance <= DRAFT_COSINE_TOLERANCE
    # The tolerance alone is loose under random weights; the draft must also be far closer
    # to the full decode than another picture is.
    assert distance < 0.05 * cosine_distance(full_vector, different_vector)

    # What the network sees after its 256-pixel resize is nearly the same picture.
    seen_drafted = np.asarray(drafted.resize((384, 256), Image.Resampling.BILINEAR), dtype=float)
    seen_full = np.asarray(full.resize((384, 256), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(seen_drafted - seen_full).mean() < 2


def test_draft_applies_after_exif_orientation_too():
    stored = photo_like(4, (1200, 800))

    loaded = load_rgb(encode(stored, "JPEG", exif=with_orientation(6), quality=85))

    assert loaded.size[0] < loaded.size[1]  # upright: portrait
    assert min(loaded.size) >= DRAFT_MIN_SIDE


def test_small_jpeg_keeps_its_full_size():
    loaded = load_rgb(encode(photo_like(0, (600, 400)), "JPEG"))

    assert loaded.size == (600, 400)


# --- Files that cannot be decoded -------------------------------------------------------


@pytest.mark.parametrize("max_pixels", [400, 999])  # beyond twice the limit, and just beyond it
def test_too_many_pixels_is_refused_with_a_readable_message(max_pixels):
    limit_before = Image.MAX_IMAGE_PIXELS
    encoded = encode(photo_like(0, (40, 25)), "PNG")

    with pytest.raises(TooManyPixels, match="too many pixels"):
        load_rgb(encoded, max_pixels=max_pixels)

    # Nothing process-wide changed: the next image is judged by its own call's limit.
    assert Image.MAX_IMAGE_PIXELS == limit_before
    encoded.seek(0)
    assert load_rgb(encoded, max_pixels=1000).size == (40, 25)


def test_beyond_twice_the_process_limit_pillow_itself_refuses_and_we_say_so(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(TooManyPixels, match="the limit is 100"):
        decode(encode(photo_like(0, (40, 25)), "PNG"))


def test_many_threads_decoding_at_once_each_get_their_own_answer():
    """The worker decodes in threads: calls with different limits must not change each other's fate.

    Before, each call swapped Pillow's process-wide limit and warning filters (neither is
    thread-safe), so one thread could judge its image by another's limit.
    """
    from concurrent.futures import ThreadPoolExecutor

    ordinary = encode(photo_like(1, (600, 400)), "JPEG").getvalue()  # 0.24 Mpx
    bomb = encode(Image.new("L", (1200, 1000)), "PNG").getvalue()  # 1.2 Mpx of one grey: a few KB
    cases = [
        (ordinary, 1_000_000, (600, 400)),
        (ordinary, 100_000, "refused"),
        (bomb, 1_000_000, "refused"),
        (bomb, 2_000_000, (1200, 1000)),
    ]
    jobs = [cases[index % len(cases)] for index in range(400)]

    def outcome(job):
        data, limit, _ = job
        try:
            return decode(io.BytesIO(data), max_pixels=limit).picture.size
        except TooManyPixels:
            return "refused"

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(outcome, jobs))

    assert results == [expected for _, _, expected in jobs]


@pytest.mark.parametrize("size", [(320, 240), (1200, 900)])  # full decode and drafted decode
def test_truncated_jpeg_is_undecodable(size):
    data = encode(photo_like(0, size), "JPEG").getvalue()

    with pytest.raises(UndecodableImage, match="cannot be decoded"):
        load_rgb(io.BytesIO(data[: len(data) // 2]))


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"",
        b"Hello, this is not a picture.\n",
    ],
    ids=["random bytes", "empty", "text"],
)
def test_non_images_are_undecodable(data):
    with pytest.raises(UndecodableImage, match="cannot be decoded"):
        load_rgb(io.BytesIO(data))


def test_whatever_a_decoder_raises_becomes_undecodable(monkeypatch):
    """Pillow's plug-ins raise kinds no list keeps up with: each one means a file that cannot be read."""
    from PIL import ImageFile

    data = encode(photo_like(0, (16, 16)), "PNG").getvalue()
    for kind in (TypeError, KeyError, IndexError, ZeroDivisionError, MemoryError, RecursionError, AssertionError):
        def broken_load(self, kind=kind):
            raise kind("inside the decoder")

        monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
        with pytest.raises(UndecodableImage, match="cannot be decoded"):
            decode(io.BytesIO(data))
