"""imaging.tiff: a TIFF that libtiff decodes only in part is refused in strict mode (upload
validation), an intact one of every compression is accepted, and no TIFF makes the decoder
raise anything but UndecodableImage.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaging import UndecodableImage, decode
from tests.conftest import photo_like


def encode(image: Image.Image, image_format: str, **options) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    buffer.seek(0)
    return buffer


# --- A required tag missing -------------------------------------------------------------


def tiff_without(tag: int, image_format_options: dict | None = None) -> bytes:
    """A TIFF whose first directory lacks ``tag``: the entry is renamed to an unknown tag."""
    import struct

    data = bytearray(encode(photo_like(0, (64, 48)), "TIFF", **(image_format_options or {})).getvalue())
    directory = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, directory)[0]):
        entry = directory + 2 + 12 * index
        if struct.unpack_from("<H", data, entry)[0] == tag:
            struct.pack_into("<H", data, entry, 65000 + index)  # keeps the directory's order valid
    return bytes(data)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("tag", [256, 257, 273, 279, 258, 262], ids=lambda tag: f"tag-{tag}")
def test_a_tiff_missing_a_required_tag_is_undecodable_not_a_crash(tag, strict):
    # Without ImageWidth (256) Pillow raises TypeError("Missing dimensions") from a KeyError.
    try:
        decode(io.BytesIO(tiff_without(tag)), strict=strict)
    except UndecodableImage as error:
        assert "cannot be decoded" in str(error) and error.detail
    # Anything else raised fails the test by itself.


# --- Fax (CCITT) and other compressed TIFFs: damaged data is refused in strict mode -----

FAX_COMPRESSIONS = ["group3", "group4", "tiff_ccitt"]
TIFF_COMPRESSIONS = ["raw", "tiff_lzw", "tiff_adobe_deflate", "jpeg", "packbits", *FAX_COMPRESSIONS]


def tiff_bytes(compression: str, size=(200, 150), **options) -> bytes:
    picture = photo_like(0, size)
    if compression in FAX_COMPRESSIONS:
        picture = picture.convert("1")
    return encode(picture, "TIFF", compression=compression, **options).getvalue()


def strip_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.tag_v2[273][-1], image.tag_v2[279][-1]


def with_strip_byte_count(data: bytes, count: int) -> bytes:
    """The same file with its (single) strip declared ``count`` bytes long: cut short."""
    import struct

    patched = bytearray(data)
    directory = struct.unpack_from("<I", patched, 4)[0]
    for index in range(struct.unpack_from("<H", patched, directory)[0]):
        entry = directory + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", patched, entry)
        if tag == 279:
            struct.pack_into("<H" if kind == 3 else "<I", patched, entry + 8, count)
    return bytes(patched)


@pytest.mark.parametrize("strip_size", [None, 300])
@pytest.mark.parametrize("size", [(200, 150), (1, 1), (37, 300), (640, 20)])
@pytest.mark.parametrize("compression", TIFF_COMPRESSIONS)
def test_every_intact_tiff_compression_is_accepted_in_strict_mode(compression, size, strip_size):
    # An unknown private tag and a description: libtiff warns about the first, and must not be heeded.
    if strip_size and compression == "jpeg":  # JPEG strips hold whole 16-row blocks
        strip_size = 16 * size[0] * 3
    options = {"strip_size": strip_size} if strip_size else {}
    data = tiff_bytes(compression, size, tiffinfo={65000: "private", 270: "a scan"}, **options)

    decoded = decode(io.BytesIO(data), strict=True)

    assert (decoded.width, decoded.height) == size
    assert decoded.picture.tobytes() == decode(io.BytesIO(data)).picture.tobytes()


@pytest.mark.parametrize("kept", [0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("compression", FAX_COMPRESSIONS)
def test_a_fax_tiff_cut_short_is_refused_in_strict_mode(compression, kept):
    data = tiff_bytes(compression)
    _, count = strip_of(data)
    short = with_strip_byte_count(data, int(count * kept))
    with Image.open(io.BytesIO(short)) as image:  # what made it look half blank: no complaint
        try:
            image.load()
        except OSError:
            pass

    with pytest.raises(UndecodableImage, match="picture data"):
        decode(io.BytesIO(short), strict=True)


@pytest.mark.parametrize("strips", ["one strip", "many strips"])
@pytest.mark.parametrize("damage", ["zeroed second half", "bit flips"])
@pytest.mark.parametrize("compression", ["group4", "tiff_ccitt"])
def test_a_fax_tiff_with_damaged_data_is_refused_in_strict_mode(compression, damage, strips):
    # Many strips: the damage is in the second of several, each decoded apart from the others.
    data = bytearray(tiff_bytes(compression, **({"strip_size": 1000} if strips == "many strips" else {})))
    with Image.open(io.BytesIO(bytes(data))) as image:
        damaged = 1 if strips == "many strips" else 0
        offset, count = image.tag_v2[273][damaged], image.tag_v2[279][damaged]
    if damage == "zeroed second half":
        data[offset + count // 2 : offset + count] = bytes(count - count // 2)
    else:
        rng = np.random.default_rng(4)
        for position in rng.integers(offset, offset + count, 3):
            data[position] ^= 1 << int(rng.integers(8))

    with pytest.raises(UndecodableImage, match="picture data"):
        decode(io.BytesIO(bytes(data)), strict=True)
    # Outside strict mode (the worker, thumbnails) the same file still shows what it can.
    assert decode(io.BytesIO(bytes(data))).picture.size == (200, 150)


def test_libtiff_complaints_are_kept_apart_per_thread():
    """One thread's damaged fax must not refuse another thread's intact one, nor go unnoticed."""
    from concurrent.futures import ThreadPoolExecutor

    intact = tiff_bytes("group4")
    offset, count = strip_of(intact)
    damaged = bytearray(intact)
    damaged[offset + 40 : offset + 48] = b"\x02" * 8  # codes no fax decoder accepts
    jobs = [(bytes(damaged), "refused") if index % 2 else (intact, "accepted") for index in range(200)]

    def outcome(job):
        try:
            decode(io.BytesIO(job[0]), strict=True)
        except UndecodableImage:
            return "refused"
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(outcome, jobs)) == [expected for _, expected in jobs]
