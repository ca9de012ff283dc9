"""Nothing public carries the uploader's camera metadata: pages and the API offer renditions only."""

import io
import re
import struct

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from PIL import ImageCms
from PIL.PngImagePlugin import PngInfo

from gallery.renditions import renditions_create
from similarity.models import EmbeddingJob
from tests.conftest import encode, photo_like, unit_vector, upload

pytestmark = pytest.mark.django_db

GPS_IFD = 0x8825


def photo_with_gps(seed: int, size=(1600, 1200)) -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = "Camera maker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    return encode(photo_like(seed, size), "JPEG", exif=exif.tobytes())


def urls_in(text: str) -> set[str]:
    """Every media URL a page or a JSON body offers: src, srcset candidates, url fields."""
    return set(re.findall(r"/media/[^\s\"',]+", text))


def test_no_public_url_returns_the_camera_metadata(staff_client):
    from gallery.services import image_create

    client = Client()  # a visitor: not the logged-in staff_client

    located = image_create(upload=upload("located.jpg", photo_with_gps(1)), enqueue=False)
    neighbour = image_create(upload=upload("other.jpg", photo_with_gps(2)), enqueue=False)
    for image, vector in ((located, unit_vector(1, 0)), (neighbour, unit_vector(1, 0.1))):
        renditions_create(image=image)
        image.embeddings.create(model_identity="resnet18/random-seed0", vector=vector)
    EmbeddingJob.objects.update(status=EmbeddingJob.Status.READY)

    public = [
        client.get("/").content.decode(),
        client.get(reverse("gallery:image-detail", args=[located.pk])).content.decode(),
        client.get(reverse("gallery:api-similar", args=[located.pk])).content.decode(),
    ]
    offered = set().union(*(urls_in(text) for text in public))
    assert len(offered) >= 6  # both images' renditions, on every page
    formats = set()
    for url in offered:
        response = client.get(url)
        assert response.status_code == 200, url
        data = b"".join(response.streaming_content)
        with PILImage.open(io.BytesIO(data)) as picture:
            assert picture.format in ("JPEG", "WEBP", "AVIF"), url
            formats.add(picture.format)
            assert not picture.getexif().get_ifd(GPS_IFD) and "exif" not in picture.info, url
        assert b"Camera maker" not in data, url

    assert formats == {"JPEG", "WEBP", "AVIF"}  # the cards' formats and the display JPEGs
    # The original has no public URL at all...
    assert located.file.url not in "".join(public)
    assert client.get(located.file.url).status_code == 404
    # ...and staff can still download it, metadata intact, as an attachment (never inline).
    original = staff_client.get(reverse("admin:gallery_image_original", args=[located.pk]))
    assert original.status_code == 200 and original["Content-Disposition"].startswith("attachment")
    with PILImage.open(io.BytesIO(b"".join(original.streaming_content))) as picture:
        assert picture.getexif().get_ifd(GPS_IFD)[1] == "N"
    assert client.get(reverse("admin:gallery_image_original", args=[located.pk])).status_code == 302  # to log in


def test_a_tiff_is_offered_to_browsers_only_as_jpeg_renditions(client):
    from gallery.services import image_create

    tiff = image_create(upload=upload("scan.tif", encode(photo_like(3, (2400, 1800)), "TIFF")), enqueue=False)
    page = client.get(reverse("gallery:image-detail", args=[tiff.pk])).content.decode()
    assert tiff.file.url not in page and "srcset" not in page  # a placeholder until renditions exist

    renditions_create(image=tiff)
    page = client.get(reverse("gallery:image-detail", args=[tiff.pk])).content.decode()
    candidates = re.search(r'srcset="([^"]+)"', page).group(1).split(", ")
    assert [candidate.rsplit(" ", 1)[1] for candidate in candidates] == ["320w", "640w", "1280w"]
    assert all(candidate.split(" ")[0].endswith(".jpg") for candidate in candidates)


# --- Renditions carry pixels only: every input format, every kind of metadata ----------

SECRET = b"SECRET-51.5N-0.12W-camera-serial-0042"
XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_PACKET = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description>' + SECRET + b"</rdf:Description></rdf:RDF></x:xmpmeta>"
# An IPTC caption record (2:120) in a Photoshop image resource block (8BIM, resource 0x0404).
IPTC = b"\x1c\x02\x78" + len(SECRET).to_bytes(2, "big") + SECRET
PHOTOSHOP_IRB = b"8BIM\x04\x04\x00\x00" + len(IPTC).to_bytes(4, "big") + IPTC
# What a rendition may hold: start and end of image, the JFIF header, quantisation and
# Huffman tables, a frame and its scans with their restart markers. Nothing an uploader wrote.
SOI, EOI, SOS, APP0 = 0xD8, 0xD9, 0xDA, 0xE0
RESTARTS = set(range(0xD0, 0xD8))
ALLOWED_MARKERS = {SOI, EOI, SOS, APP0, 0xDB, 0xC4, 0xC0, 0xC1, 0xC2} | RESTARTS


def jpeg_markers(data: bytes) -> list[tuple[int, bytes]]:
    """Every marker of a JPEG stream with its segment's payload, entropy-coded data skipped."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    found, at = [(SOI, b"")], 2
    while at < len(data):
        assert data[at] == 0xFF, f"no marker at byte {at}"
        while data[at] == 0xFF:  # fill bytes
            at += 1
        marker = data[at]
        at += 1
        if marker == EOI:
            found.append((EOI, b""))
            assert at == len(data), "bytes after the end of the image"
            return found
        if marker in RESTARTS:
            found.append((marker, b""))
        else:
            length = int.from_bytes(data[at : at + 2], "big")
            found.append((marker, data[at + 2 : at + length]))
            at += length
        if marker == SOS or marker in RESTARTS:
            # Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a fill byte.
            while not (data[at] == 0xFF and data[at + 1] not in (0x00, 0xFF)):
                at += 1
    raise AssertionError("no end-of-image marker")


def with_jpeg_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """A JPEG with one more application or comment segment, straight after its start marker."""
    return jpeg[:2] + bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def rotated_primaries_profile() -> bytes:
    """An ICC RGB profile whose red is sRGB's green, green sRGB's blue and blue sRGB's red.

    Not sRGB, so a rendition must convert: pure red tagged with it is pure green on screen.
    The expected pixels follow from the primaries alone, not from a colour engine's output.
    """
    red, green, blue = (0.4360747, 0.2225045, 0.0139322), (0.3850649, 0.7168786, 0.0971045), (0.1430804, 0.0606169, 0.7141733)
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\x00\x00"
    description = b"Rotated primaries"
    tags = [
        (b"desc", b"desc\x00\x00\x00\x00" + struct.pack(">I", len(description) + 1) + description + b"\x00"
         + struct.pack(">IIHB", 0, 0, 0, 0) + bytes(67)),
        (b"cprt", b"text\x00\x00\x00\x00" + b"No copyright\x00"),
        (b"wtpt", b"XYZ \x00\x00\x00\x00" + _s15(0.9642) + _s15(1.0) + _s15(0.8249)),
        (b"rXYZ", b"XYZ \x00\x00\x00\x00" + b"".join(map(_s15, green))),
        (b"gXYZ", b"XYZ \x00\x00\x00\x00" + b"".join(map(_s15, blue))),
        (b"bXYZ", b"XYZ \x00\x00\x00\x00" + b"".join(map(_s15, red))),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, content in tags:
        content += bytes(-len(content) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(content))
        body += content
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + bytes(4) + b"\x02\x10\x00\x00" + b"mntrRGB XYZ " + bytes(12) + b"acsp"
        + bytes(24) + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


PRIMARIES = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def primaries_picture() -> PILImage.Image:
    """Three flat bands: red, green and blue."""
    picture = PILImage.new("RGB", (96, 32))
    for band, colour in enumerate(PRIMARIES):
        picture.paste(colour, (32 * band, 0, 32 * band + 32, 32))
    return picture


def exif_with_gps() -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = SECRET.decode()
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    return exif.tobytes()


def png_with(**chunks) -> bytes:
    text = PngInfo()
    if chunks.get("tEXt"):
        text.add_text("Comment", SECRET.decode())
    if chunks.get("zTXt"):
        text.add_text("Author", SECRET.decode(), zip=True)
    if chunks.get("iTXt"):
        text.add_itxt("Description", SECRET.decode(), lang="en", tkey="Description")
    if chunks.get("XMP"):
        text.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
    options = {key: value for key, value in chunks.items() if key in ("exif", "icc_profile")}
    return encode(photo_like(41, (96, 64)), "PNG", pnginfo=text, **options)


def plain_jpeg() -> bytes:
    return encode(photo_like(42, (96, 64)))


# (input format, kind of metadata) -> the file's bytes; each format with what it can carry.
METADATA = {
    ("JPEG", "EXIF and GPS"): lambda: encode(photo_like(40, (96, 64)), exif=exif_with_gps()),
    ("JPEG", "XMP"): lambda: with_jpeg_segment(plain_jpeg(), 0xE1, XMP_NAMESPACE + XMP_PACKET),
    ("JPEG", "IPTC (Photoshop APP13)"): lambda: with_jpeg_segment(plain_jpeg(), 0xED, b"Photoshop 3.0\x00" + PHOTOSHOP_IRB),
    ("JPEG", "COM comment"): lambda: encode(photo_like(40, (96, 64)), comment=SECRET),
    ("JPEG", "other application segment"): lambda: with_jpeg_segment(plain_jpeg(), 0xEF, b"Vendor\x00" + SECRET),
    ("PNG", "tEXt"): lambda: png_with(tEXt=True),
    ("PNG", "zTXt"): lambda: png_with(zTXt=True),
    ("PNG", "iTXt"): lambda: png_with(iTXt=True),
    ("PNG", "XMP"): lambda: png_with(XMP=True),
    ("PNG", "EXIF and GPS"): lambda: png_with(exif=exif_with_gps()),
    ("WEBP", "EXIF and GPS"): lambda: encode(photo_like(43, (96, 64)), "WEBP", exif=exif_with_gps()),
    ("WEBP", "XMP"): lambda: encode(photo_like(43, (96, 64)), "WEBP", xmp=XMP_PACKET),
    ("GIF", "comment"): lambda: encode(photo_like(44, (96, 64)), "GIF", comment=SECRET),
    ("TIFF", "EXIF and GPS"): lambda: encode(photo_like(45, (96, 64)), "TIFF", exif=exif_with_gps()),
    ("TIFF", "description, XMP and IPTC"): lambda: encode(
        photo_like(45, (96, 64)), "TIFF", tiffinfo={270: SECRET.decode(), 700: XMP_PACKET, 33723: IPTC}
    ),
    **{
        (image_format, "ICC profile, not sRGB"): (
            lambda image_format=image_format: encode(primaries_picture(), image_format, icc_profile=rotated_primaries_profile())
        )
        for image_format in ("JPEG", "PNG", "WEBP", "TIFF")
    },
    # Transparency is composited before the colours are converted, not instead of it.
    ("PNG", "ICC profile, not sRGB, with transparency"): lambda: encode(
        primaries_picture().convert("RGBA"), "PNG", icc_profile=rotated_primaries_profile()
    ),
}


# What a WebP rendition may hold: the picture (lossy or lossless), its alpha, and the
# extended header, whose flags must announce no ICC profile, EXIF or XMP.
WEBP_PICTURE_CHUNKS = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH"}
VP8X_ICC, VP8X_EXIF, VP8X_XMP = 0x20, 0x08, 0x04


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", "not a WebP"
    assert int.from_bytes(data[4:8], "little") + 8 == len(data), "bytes after the RIFF container"
    found, at = [], 12
    while at < len(data):
        fourcc, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        found.append((fourcc, data[at + 8 : at + 8 + size]))
        at += 8 + size + size % 2
    return found


def isobmff_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The top-level boxes of an AVIF (ISO base media) file: type and payload."""
    found, at = [], 0
    while at < len(data):
        size, box_type = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[at + 8 : at + 16], "big"), 16
        elif size == 0:
            size = len(data) - at
        found.append((box_type, data[at + header : at + size]))
        at += size
    return found


def assert_pixels_only(image_format: str, data: bytes) -> None:
    """The rendition's bytes hold the picture and what decoding it needs, nothing an uploader wrote."""
    assert SECRET not in data
    if image_format == "jpeg":
        markers = jpeg_markers(data)
        assert {marker for marker, _ in markers} <= ALLOWED_MARKERS, [hex(marker) for marker, _ in markers]
        assert [payload[:5] for marker, payload in markers if marker == APP0] == [b"JFIF\x00"]
    elif image_format == "webp":
        chunks = webp_chunks(data)
        assert {fourcc for fourcc, _ in chunks} <= WEBP_PICTURE_CHUNKS, [fourcc for fourcc, _ in chunks]
        for fourcc, payload in chunks:
            if fourcc == b"VP8X":
                assert not payload[0] & (VP8X_ICC | VP8X_EXIF | VP8X_XMP), hex(payload[0])
    else:
        boxes = isobmff_boxes(data)
        assert [box_type for box_type, _ in boxes] == [b"ftyp", b"meta", b"mdat"]
        meta = dict(boxes)[b"meta"]
        # No EXIF item, no XMP item (a "mime" item), no ICC profile ("prof"/"rICC" colour
        # boxes): only the picture's item and its properties (size, bit depth, nclx colours).
        for marker in (b"Exif", b"mime", b"prof", b"rICC"):
            assert marker not in meta, marker
    with PILImage.open(io.BytesIO(data)) as picture:
        assert not picture.getexif() and "icc_profile" not in picture.info and "comment" not in picture.info
        assert "xmp" not in picture.info and "exif" not in picture.info


def renditions_of(content: bytes, name: str) -> list[tuple[str, str, bytes]]:
    """(kind, format, bytes) of each rendition the upload gets."""
    from gallery.services import image_create

    image = image_create(upload=upload(name, content), enqueue=False)
    renditions_create(image=image)
    return [
        (rendition.kind, rendition.format, rendition.file.read())
        for rendition in image.renditions.order_by("kind", "spec", "format")
    ]


@pytest.mark.parametrize("image_format, kind", list(METADATA), ids=[" / ".join(key) for key in METADATA])
def test_renditions_carry_pixels_only(image_format, kind):
    content = METADATA[image_format, kind]()
    with PILImage.open(io.BytesIO(content)) as original:  # the metadata is really in the upload
        assert original.format == image_format
        assert SECRET in content or SECRET.decode() in str(original.info) or "icc_profile" in original.info

    renditions = renditions_of(content, f"upload.{image_format.lower()}")

    assert {rendition_format for _, rendition_format, _ in renditions} == {"jpeg", "webp", "avif"}
    for _, rendition_format, data in renditions:
        assert_pixels_only(rendition_format, data)
    if kind.startswith("ICC"):
        # Converted to sRGB before the profile was dropped: the bands look as they did tagged.
        expected = [(0, 255, 0), (0, 0, 255), (255, 0, 0)]  # what the rotated primaries mean
        display = next(data for rendition_kind, _, data in renditions if rendition_kind == "display")
        with PILImage.open(io.BytesIO(display)) as picture:
            shown = [picture.getpixel((32 * band + 16, 16)) for band in range(3)]
        # A card shows the middle of the picture, the second band, in every format.
        for rendition_kind, _, data in renditions:
            if rendition_kind == "card":
                with PILImage.open(io.BytesIO(data)) as picture:
                    shown.append(picture.convert("RGB").getpixel((picture.width // 2, picture.height // 2)))
                expected.append(expected[1])
        for pixel, colour in zip(shown, expected, strict=True):
            assert max(abs(a - b) for a, b in zip(pixel, colour)) < 40, (shown, expected)


def test_a_photo_tagged_srgb_keeps_its_colours():
    content = encode(primaries_picture(), icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data = next(data for kind, _, data in renditions_of(content, "srgb.jpg") if kind == "display")
    with PILImage.open(io.BytesIO(data)) as picture:
        shown = [picture.getpixel((32 * band + 16, 16)) for band in range(3)]
    for pixel, colour in zip(shown, PRIMARIES):
        assert max(abs(a - b) for a, b in zip(pixel, colour)) < 40, shown
