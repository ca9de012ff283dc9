"""Any file, any upload path: damaged and hostile images are refused with a reason, never a 500.

Small valid files of every accepted format are mutated (bits flipped, cut short, header
fields removed or set to extremes) and pushed through the decoder and through every way a
file comes in: the admin's upload form (loose files and a zip), ``import_images``, and
search by photo (the page and the API). Seeded and bounded; ``FUZZ_EXAMPLES`` and
``FUZZ_SEED`` make a longer or different run (``bench/fuzz_uploads.py`` drives them).
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import struct
import zipfile
import zlib
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from gallery.validation import inspect_image
from imaging import UndecodableImage, decode
from tests.conftest import encode, photo_like, upload

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("FUZZ_SEED", "15"))
ACCEPTED_SEARCHES = max(3, EXAMPLES // 20)

# Pillow warns about the metadata the mutants garble ("Corrupt EXIF data"); that is the point.
pytestmark = pytest.mark.filterwarnings(r"ignore::UserWarning:PIL\..*")

ADD_URL = reverse("admin:gallery_image_add")
SEARCH_URL = reverse("gallery:search")
API_SEARCH_URL = reverse("gallery:api-search")

TIFF_COMPRESSIONS = ["raw", "tiff_lzw", "tiff_adobe_deflate", "jpeg", "packbits", "group3", "group4", "tiff_ccitt"]
FAX = {"group3", "group4", "tiff_ccitt"}


# --- The files: valid seeds and their mutants ---------------------------------------------


def seed_files() -> dict[str, bytes]:
    """One small valid file of every accepted format and TIFF compression."""
    picture = photo_like(3, (48, 32))
    files = {
        "baseline.jpg": encode(picture, "JPEG"),
        "progressive.jpg": encode(picture, "JPEG", progressive=True),
        "picture.png": encode(picture, "PNG"),
        "palette.png": encode(picture.convert("P"), "PNG"),
        "picture.webp": encode(picture, "WEBP"),
        "picture.gif": encode(picture.convert("P"), "GIF"),
        "picture.bmp": encode(picture, "BMP"),
    }
    for compression in TIFF_COMPRESSIONS:
        source = picture.convert("1") if compression in FAX else picture
        files[f"{compression}.tif"] = encode(source, "TIFF", compression=compression)
    return files


EXTREMES = [0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


def tiff_entries(data: bytes):
    """(position, tag, type, count) of each entry of the first directory (Pillow writes little-endian)."""
    try:
        directory = struct.unpack_from("<I", data, 4)[0]
        for index in range(struct.unpack_from("<H", data, directory)[0]):
            position = directory + 2 + 12 * index
            yield (position, *struct.unpack_from("<HHI", data, position))
    except struct.error:
        return  # already mutated past reading: nothing more to change here


def tiff_without(data: bytes, tag: int) -> bytes:
    """The TIFF with the entry for ``tag`` renamed to an unknown tag: as if it were missing."""
    mutated = bytearray(data)
    for position, entry_tag, _, _ in tiff_entries(data):
        if entry_tag == tag:
            struct.pack_into("<H", mutated, position, 65000 + tag)
    return bytes(mutated)


def tiff_field(data: bytes, rng: random.Random) -> bytes:
    tag = rng.choice([256, 257, 273, 279, 258, 259, 262, 277, 278])
    if rng.random() < 0.3:
        return tiff_without(data, tag)
    mutated, value = bytearray(data), rng.choice(EXTREMES)
    for position, entry_tag, kind, count in tiff_entries(data):
        if entry_tag == tag:
            if rng.random() < 0.2:
                struct.pack_into("<I", mutated, position + 4, value)  # the entry's count
            elif kind == 3 and count <= 2:
                struct.pack_into("<H", mutated, position + 8, value & 0xFFFF)
            else:
                struct.pack_into("<I", mutated, position + 8, value)  # a value, or where the values are
    return bytes(mutated)


def png_field(data: bytes, rng: random.Random) -> bytes:
    """An IHDR field (width, height, bit depth, colour type, ...) set to an extreme value."""
    if len(data) < 33:  # already cut before the end of IHDR
        return flip_bits(data, rng)
    mutated = bytearray(data)
    offset, size = rng.choice([(16, 4), (20, 4), (24, 1), (25, 1), (26, 1), (27, 1), (28, 1)])
    value = rng.choice(EXTREMES) & (0xFFFFFFFF if size == 4 else 0xFF)
    mutated[offset : offset + size] = value.to_bytes(size, "big")
    if rng.random() < 0.8:  # mostly with a correct checksum, so the field itself is judged
        struct.pack_into(">I", mutated, 29, zlib.crc32(bytes(mutated[12:29])))
    return bytes(mutated)


def jpeg_field(data: bytes, rng: random.Random) -> bytes:
    """A start-of-frame field (height, width, component count) set to an extreme value."""
    mutated = bytearray(data)
    frame = re.search(rb"\xff[\xc0\xc2]", data)
    if frame is None or frame.start() + 10 > len(data):
        return flip_bits(data, rng)
    offset, size = rng.choice([(5, 2), (7, 2), (9, 1), (4, 1)])  # height, width, components, precision
    value = rng.choice(EXTREMES) & (0xFFFF if size == 2 else 0xFF)
    mutated[frame.start() + offset : frame.start() + offset + size] = value.to_bytes(size, "big")
    return bytes(mutated)


def little_endian_field(offsets: list[int]):
    """A header field at one of ``offsets`` (BMP sizes and depth, GIF screen size) set to an extreme."""

    def mutate(data: bytes, rng: random.Random) -> bytes:
        if len(data) < max(offsets) + 2:
            return flip_bits(data, rng)
        mutated, offset = bytearray(data), rng.choice(offsets)
        mutated[offset : offset + 2] = (rng.choice(EXTREMES) & 0xFFFF).to_bytes(2, "little")
        return bytes(mutated)

    return mutate


HEADER_FIELDS = {
    ".tif": tiff_field,
    ".png": png_field,
    ".jpg": jpeg_field,
    ".bmp": little_endian_field([18, 20, 22, 24, 28, 30]),
    ".gif": little_endian_field([6, 8]),
}


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return b"\x00"
    mutated = bytearray(data)
    # Half of the time near the start, where the headers that decide everything else live.
    span = min(len(data), 256) if rng.random() < 0.5 else len(data)
    for _ in range(rng.randint(1, 8)):
        mutated[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))] if data else data


def mutants(count: int, seed: int = SEED) -> list[tuple[str, bytes]]:
    """``count`` distinct damaged files, the same for the same seed: (file name, bytes)."""
    rng = random.Random(seed)
    seeds = sorted(seed_files().items())
    found: dict[bytes, str] = {}
    while len(found) < count:
        origin, data = rng.choice(seeds)
        stem, extension = os.path.splitext(origin)
        kinds = [("flip", flip_bits), ("cut", truncate)]
        if extension in HEADER_FIELDS:
            kinds.append(("field", HEADER_FIELDS[extension]))
        names = []
        for _ in range(rng.choice([1, 1, 2])):
            kind, mutate = rng.choice(kinds)
            data = mutate(data, rng)
            names.append(kind)
        found.setdefault(data, f"{len(found):03d}-{'-'.join(names)}-{stem}{extension}")
    return [(name, data) for data, name in found.items()]


def tiff_without_image_width() -> bytes:
    """The file from the report: Pillow raised TypeError("Missing dimensions") for it."""
    return tiff_without(encode(photo_like(4, (48, 32)), "TIFF"), 256)


def good_file(seed: int) -> tuple[str, bytes]:
    return f"good-{seed}.jpg", encode(photo_like(100 + seed, (40, 30)))


def validation_outcome(data: bytes) -> str:
    try:
        inspect_image(upload("file", data))
    except ValidationError:
        return "refused"
    return "accepted"


# --- The decoder -------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_every_mutant_decodes_or_is_undecodable(strict):
    for name, data in mutants(EXAMPLES * 5):
        try:
            decoded = decode(io.BytesIO(data), strict=strict)
        except UndecodableImage as error:
            assert error.detail, name
        else:
            assert decoded.picture.mode == "RGB" and decoded.width > 0 and decoded.height > 0, name


def test_the_mutants_cover_every_format_and_both_outcomes():
    """A generator that only ever made garbage (or only intact files) would test nothing."""
    generated = mutants(EXAMPLES * 5)
    assert {os.path.splitext(name)[1] for name, _ in generated} == {".jpg", ".png", ".webp", ".gif", ".bmp", ".tif"}
    outcomes = {validation_outcome(data) for _, data in generated}
    assert outcomes == {"accepted", "refused"}


# --- The upload paths ----------------------------------------------------------------------
# Each takes [(name, bytes)], sends them in, asserts no server error, and returns each file's
# outcome by name: "accepted" (added, or already in the gallery) or "refused", with the reason.


def verdict(row) -> str:
    return "refused" if row.status == "refused" else "accepted"  # a duplicate got in before


def through_admin_form(files, staff_client) -> dict[str, tuple[str, str]]:
    outcomes = {}
    for start in range(0, len(files), 8):  # several files in one request, as an admin sends them
        batch = files[start : start + 8]
        response = staff_client.post(ADD_URL, {"files": [upload(name, data) for name, data in batch], "caption": ""})
        assert response.status_code in (200, 302), response.status_code
        if response.status_code == 302:  # everything was added: no table needed
            outcomes.update({name: ("accepted", "") for name, _ in batch})
            continue
        rows = {row.name: row for row in response.context["outcomes"]}
        assert set(rows) == {name for name, _ in batch}  # the results table lists every file
        outcomes.update({name: (verdict(row), row.error) for name, row in rows.items()})
    return outcomes


def through_admin_zip(files, staff_client) -> dict[str, tuple[str, str]]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(f"scans/{name}", data)
    response = staff_client.post(
        ADD_URL, {"files": [upload("batch.zip", buffer.getvalue(), content_type="application/zip")], "caption": ""}
    )
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 302:
        return {name: ("accepted", "") for name, _ in files}
    rows = {row.name.removeprefix("batch.zip: scans/"): row for row in response.context["outcomes"]}
    assert set(rows) == {name for name, _ in files}
    return {name: (verdict(row), row.error) for name, row in rows.items()}


def through_import_command(files, tmp_path) -> dict[str, tuple[str, str]]:
    from gallery.models import Image

    folder = tmp_path / "to-import"
    folder.mkdir()
    for name, data in files:
        (folder / name).write_bytes(data)
    out = StringIO()
    call_command("import_images", str(folder), stdout=out, verbosity=0)
    report = out.getvalue()
    counts = re.search(r"Imported (\d+) new image\(s\); (\d+) already in the gallery; (\d+) refused", report)
    added, already, refused = map(int, counts.groups())
    assert added + already + refused == len(files), report  # every file is counted once
    reasons, reason = {}, ""
    for line in report.splitlines():  # "  refused (2): <reason>" then the names, comma-separated
        if match := re.match(r"  refused \(\d+\): (.*)", line):
            reason = match.group(1)
        elif line.startswith("    ") and reason:
            reasons.update(dict.fromkeys(re.sub(r" and \d+ more$", "", line.strip()).split(", "), reason))
    names = [name for name, _ in files]
    stored = set(Image.objects.filter(original_name__in=names).values_list("original_name", flat=True))
    assert len(stored) == added, report
    return {name: ("accepted", "") if name in stored else ("refused", reasons.get(name, "")) for name, _ in files}


def through_search_page(files) -> dict[str, tuple[str, str]]:
    outcomes = {}
    for name, data in files:
        response = Client().post(SEARCH_URL, {"photo": upload(name, data)})
        assert response.status_code in (200, 400, 503), (name, response.status_code)
        form = response.context.get("form") if response.context else None
        errors = form.errors.get("photo") if form is not None else None
        if errors:
            assert response.status_code in (200, 400)
            assert escape(errors[0]) in response.content.decode()  # the reason is shown
            outcomes[name] = ("refused", str(errors[0]))
        else:
            outcomes[name] = ("accepted", "")
    return outcomes


def through_search_api(files) -> dict[str, tuple[str, str]]:
    outcomes = {}
    for name, data in files:
        response = Client().post(API_SEARCH_URL, {"photo": upload(name, data)})
        assert response["Content-Type"].startswith("application/json"), (name, response.status_code)
        body = json.loads(response.content)
        if response.status_code == 400:
            assert isinstance(body["error"], dict) and body["error"], body  # the API's error shape
            outcomes[name] = ("refused", json.dumps(body["error"]))
        else:
            assert response.status_code in (200, 503), (name, response.status_code, body)
            outcomes[name] = ("accepted", "")
    return outcomes


PATHS = ["admin form", "admin zip", "import_images", "search page", "search API"]


@pytest.fixture
def send(request, settings, tmp_path):
    """send(files) -> outcomes, through the path named by the test's ``path`` parameter."""
    path = request.node.callspec.params["path"]
    settings.SEARCH_RATE = "100000/m"  # many searches from one address are the point here
    settings.SEARCH_TIMEOUT_SECONDS = 0.05  # an accepted photo finds no worker: 503, soon
    if path.startswith("search"):
        from tests.conftest import purge_queues

        purge_queues()
        request.addfinalizer(purge_queues)
        return through_search_page if path == "search page" else through_search_api
    if path == "import_images":
        return lambda files: through_import_command(files, tmp_path)
    staff_client = request.getfixturevalue("staff_client")
    through = through_admin_form if path == "admin form" else through_admin_zip
    return lambda files: through(files, staff_client)


def assert_no_traceback_logged(caplog):
    logged = [record for record in caplog.records if record.levelno >= logging.ERROR and record.exc_info]
    assert not logged, [record.getMessage() for record in logged]


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_every_mutant_gets_an_outcome_and_the_same_one_everywhere(path, send, caplog):
    caplog.set_level(logging.WARNING)
    files, good = [], []
    for index, mutant in enumerate(mutants(EXAMPLES)):
        if index % 7 == 0:  # a good file in every admin batch: it must get in whatever its neighbours
            good.append(good_file(index))
            files.append(good[-1])
        files.append(mutant)

    if path.startswith("search"):
        # An accepted photo waits for a worker that is not there: the result backend answers
        # "no" after a second whatever SEARCH_TIMEOUT_SECONDS says, so only a few are sent.
        accepted = [item for item in files if validation_outcome(item[1]) == "accepted"]
        files = [item for item in files if item not in accepted[ACCEPTED_SEARCHES:]]

    outcomes = send(files)

    assert set(outcomes) == {name for name, _ in files}
    for name, data in files:
        # The same decoder decides on every path: what upload validation refuses is refused.
        assert outcomes[name][0] == validation_outcome(data), (name, outcomes[name])
    assert all(outcomes[name][0] == "accepted" for name, _ in good if name in outcomes)
    assert_no_traceback_logged(caplog)


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_a_tiff_without_image_width_is_refused_with_the_reason_and_the_rest_goes_on(path, send, caplog):
    caplog.set_level(logging.WARNING)
    files = [good_file(1), ("no-width.tif", tiff_without_image_width()), good_file(2)]

    outcomes = send(files)

    status, reason = outcomes["no-width.tif"]
    assert status == "refused"
    assert "cannot be decoded" in reason or "damaged" in reason, reason
    assert outcomes["good-1.jpg"][0] == outcomes["good-2.jpg"][0] == "accepted"
    assert_no_traceback_logged(caplog)
