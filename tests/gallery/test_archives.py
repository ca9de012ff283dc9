"""Zip archives in the admin's upload: opened safely, every member reported, limits enforced."""

import bz2
import gzip
import io
import lzma
import os
import struct
import tarfile
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from gallery.archives import display_path, is_junk, is_unsafe_path, zip_members
from gallery.models import Image
from tests.conftest import encode, photo_like, upload

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:gallery_image_add")


def make_zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """entries: (name, bytes) pairs; a name ending in '/' is a folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries:
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return buffer.getvalue()


def zip_upload(name, entries, **options):
    return upload(name, make_zip(entries, **options), content_type="application/zip")


def photo(seed: int) -> bytes:
    return encode(photo_like(seed, (64, 48)))


def stored_files(settings):
    return {path for path in settings.MEDIA_ROOT.rglob("*") if path.is_file()}


def result_rows(response) -> dict:
    return {outcome.name: outcome for outcome in response.context["outcomes"]}


def form_errors(response) -> str:
    """What the results table says of the files that were not added."""
    return " ".join(f"{outcome.name}: {outcome.error}" for outcome in response.context["outcomes"] if outcome.error)


def test_bulk_upload_of_files_and_a_zip_lists_every_file(staff_client, settings):
    staff_client.post(ADD_URL, {"files": [upload("first.jpg", photo(1))]})
    first = Image.objects.get()
    archive = zip_upload(
        "holiday.zip",
        [
            ("holiday/", b""),
            ("holiday/beach.jpg", photo(3)),
            ("holiday/notes.txt", b"remember the sunscreen"),
            ("../../escape.jpg", photo(4)),
            ("__MACOSX/holiday/._beach.jpg", b"\x00\x05\x16\x07 resource fork"),
            ("holiday/.DS_Store", b"junk"),
        ],
    )
    files = [upload("dune.jpg", photo(2)), upload("again.jpg", photo(1)), upload("text.jpg", b"not a picture"), archive]

    response = staff_client.post(ADD_URL, {"files": files})

    assert response.status_code == 200
    rows = result_rows(response)
    assert list(rows) == [
        "dune.jpg", "again.jpg", "text.jpg", "holiday.zip: holiday/beach.jpg",
        "holiday.zip: holiday/notes.txt", "holiday.zip: ../../escape.jpg",
    ]
    added = {name for name, row in rows.items() if row.status == "added"}
    assert added == {"dune.jpg", "holiday.zip: holiday/beach.jpg"}
    assert rows["again.jpg"].duplicate_of == first
    assert "not an image" in rows["text.jpg"].error
    assert "not an image" in rows["holiday.zip: holiday/notes.txt"].error
    assert "unsafe" in rows["holiday.zip: ../../escape.jpg"].error
    beach = rows["holiday.zip: holiday/beach.jpg"].image
    assert (beach.original_name, beach.caption) == ("beach.jpg", "beach")
    assert Image.objects.count() == 3
    html = response.content.decode()
    assert "2 added, 1 already in the gallery, 3 refused." in html
    assert "unsafe (absolute, or with &#x27;..&#x27;)" in html
    # Nothing was written under a name from the archive, inside the media folder or beside it.
    assert not any("escape" in path.name or "beach" in path.name for path in settings.MEDIA_ROOT.parent.rglob("*"))


def test_an_archive_whose_members_are_all_added_still_gets_the_result_page(staff_client):
    archive = zip_upload("two.zip", [("a.jpg", photo(1)), ("b.png", encode(photo_like(2, (40, 30)), "PNG"))])
    response = staff_client.post(ADD_URL, {"files": [archive]})
    assert response.status_code == 200
    assert [row.status for row in response.context["outcomes"]] == ["added", "added"]
    assert Image.objects.count() == 2


def test_too_many_members_refuses_the_whole_archive(staff_client, settings, django_capture_on_commit_callbacks):
    settings.ZIP_MAX_MEMBERS = 3
    files_before = stored_files(settings)
    archive = zip_upload("many.zip", [(f"photo-{seed}.jpg", photo(seed)) for seed in range(4)])
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(ADD_URL, {"files": [archive]})
    assert response.status_code == 200
    assert "many.zip" in form_errors(response)
    expected = "The archive holds 4 entries; at most 3 are accepted. Nothing from the archive was added."
    assert expected in form_errors(response)
    assert Image.objects.count() == 0 and callbacks == []
    assert stored_files(settings) == files_before


def test_too_many_bytes_uncompressed_refuses_the_whole_archive_but_not_the_other_files(staff_client, settings):
    settings.ZIP_MAX_TOTAL_BYTES = 20_000
    # Compresses to almost nothing, so only the uncompressed size can trip the limit.
    entries = [("photo.jpg", photo(1)), ("padding.bin", bytes(30_000))]
    response = staff_client.post(ADD_URL, {"files": [upload("ok.jpg", photo(2)), zip_upload("big.zip", entries)]})
    rows = result_rows(response)
    assert rows["ok.jpg"].status == "added"
    assert rows["big.zip"].status == "refused"
    assert "more than 19.5\xa0KB once uncompressed" in rows["big.zip"].error
    assert "Nothing from the archive was added." in rows["big.zip"].error
    assert list(Image.objects.values_list("original_name", flat=True)) == ["ok.jpg"]


def test_an_archive_larger_than_the_limit_is_refused_before_it_is_opened(staff_client, settings):
    settings.ZIP_MAX_TOTAL_BYTES = 1000
    archive = zip_upload("photos.zip", [("a.jpg", photo(1))], compression=zipfile.ZIP_STORED)
    response = staff_client.post(ADD_URL, {"files": [archive]})
    assert "The archive is too large" in form_errors(response) and "the limit is 1000\xa0bytes" in form_errors(response)
    assert Image.objects.count() == 0


def test_a_highly_compressed_member_is_cut_off_at_the_file_size_limit(staff_client, settings):
    settings.IMAGE_MAX_UPLOAD_BYTES = 1024 * 1024
    bomb = bytes(20 * 1024 * 1024)  # 20 MB of zeros: about 20 KB compressed
    archive = zip_upload("bomb.zip", [("zeros.jpg", bomb), ("real.jpg", photo(1))])
    assert archive.size < 100_000
    response = staff_client.post(ADD_URL, {"files": [archive]})
    rows = result_rows(response)
    assert "too large (more than 1.0\xa0MB once uncompressed)" in rows["bomb.zip: zeros.jpg"].error
    assert rows["bomb.zip: real.jpg"].status == "added"


def test_a_member_whose_declared_size_lies_is_reported_damaged(staff_client):
    content = make_zip([("liar.jpg", photo(1)), ("honest.jpg", photo(2))], compression=zipfile.ZIP_STORED)
    # Claim 100 bytes for the first member in both its local header and the central directory.
    lying = bytearray(content)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = lying.index(signature)
        lying[at + offset : at + offset + 4] = struct.pack("<L", 100)
    response = staff_client.post(ADD_URL, {"files": [upload("lies.zip", bytes(lying))]})
    rows = result_rows(response)
    assert "damaged" in rows["lies.zip: liar.jpg"].error
    assert rows["lies.zip: honest.jpg"].status == "added"


def test_a_damaged_archive_is_refused_with_a_reason(staff_client):
    content = make_zip([("a.jpg", photo(1))])
    response = staff_client.post(ADD_URL, {"files": [upload("broken.zip", content[: len(content) // 2])]})
    assert response.status_code == 200
    assert "broken.zip" in form_errors(response) and "cannot be opened" in form_errors(response)


def test_an_archive_named_like_an_image_is_still_opened_as_an_archive(staff_client):
    response = staff_client.post(ADD_URL, {"files": [upload("sneaky.jpg", make_zip([("inner.jpg", photo(1))]))]})
    assert result_rows(response)["sneaky.jpg: inner.jpg"].status == "added"


def test_an_archive_with_only_an_unsafe_member_adds_nothing_and_says_why(staff_client):
    response = staff_client.post(ADD_URL, {"files": [zip_upload("evil.zip", [("/etc/cron.d/photo.jpg", photo(1))])]})
    assert "evil.zip: /etc/cron.d/photo.jpg" in form_errors(response)
    assert "unsafe" in form_errors(response)
    assert Image.objects.count() == 0


def test_an_empty_archive_says_so(staff_client):
    response = staff_client.post(ADD_URL, {"files": [zip_upload("empty.zip", [("folder/", b"")])]})
    assert "The archive holds no files." in form_errors(response)


@pytest.mark.parametrize(
    "name", ["../a.jpg", "a/../../b.jpg", "/abs.jpg", "C:/windows.jpg", "c:evil.jpg", "..\\win.jpg", "x\\..\\..\\y.jpg"]
)
def test_unsafe_paths(name):
    assert is_unsafe_path(name)


@pytest.mark.parametrize("name", ["a.jpg", "dir/b.jpg", "dir/..hidden.jpg", "dots...jpg"])
def test_safe_paths(name):
    assert not is_unsafe_path(name)


def test_junk_and_display_paths():
    assert is_junk("__MACOSX/dir/._a.jpg") and is_junk("dir/._a.jpg") and is_junk("Thumbs.db")
    assert not is_junk("dir/a.jpg")
    assert display_path("dir\\a\x00b\x1b.jpg") == "dir/ab.jpg"
    assert len(display_path("d/" * 300 + "a.jpg")) == 200


def test_extracted_copies_are_deleted_when_done():
    archive = upload("x.zip", make_zip([("a.jpg", photo(1))]))
    with zip_members(upload=archive) as members:
        (member,) = members
        copy_path = member.upload.temporary_file_path()
        assert open(copy_path, "rb").read() == photo(1)
    assert not os.path.exists(copy_path)


# --- Damaged and nested archives -----------------------------------------------------------


def archive_with_a_zip_inside() -> bytes:
    """Stored, not deflated: the inner archive's own directory is there to be found in the bytes."""
    inner = make_zip([("inner.jpg", photo(2))], compression=zipfile.ZIP_STORED)
    return make_zip([("outer.jpg", photo(1)), ("inner.zip", inner), ("last.jpg", photo(3))], compression=zipfile.ZIP_STORED)


def test_an_archive_cut_short_anywhere_is_damaged_and_never_read_as_the_zip_inside_it():
    whole = archive_with_a_zip_inside()
    assert zipfile.ZipFile(io.BytesIO(whole[: whole.index(b"last.jpg")])).namelist() == ["inner.jpg"]  # zipfile alone
    for length in range(len(b"PK\x03\x04"), len(whole)):
        with pytest.raises(ValidationError) as refused:
            zip_members(upload=upload("cut.zip", whole[:length]))
        assert refused.value.code == "zip_damaged", length


def test_a_cut_short_archive_adds_nothing_and_says_it_is_damaged(staff_client):
    whole = archive_with_a_zip_inside()
    response = staff_client.post(ADD_URL, {"files": [upload("cut.zip", whole[: whole.index(b"last.jpg")])]})
    assert response.status_code == 200
    assert "cut.zip: The file looks like a zip archive but cannot be opened: it is damaged" in form_errors(response)
    assert Image.objects.count() == 0


def tar_of(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        entry = tarfile.TarInfo(name)
        entry.size = len(content)
        archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


NESTED = {
    "inner.zip": make_zip([("a.jpg", photo(4))]),
    "empty.zip": make_zip([]),
    "looks-like-a.jpg": make_zip([("a.jpg", photo(5))]),
    "photos.tar": tar_of("a.jpg", photo(6)),
    "photos.tar.gz": gzip.compress(tar_of("a.jpg", photo(6))),
    "photo.jpg.gz": gzip.compress(photo(7)),
    "photos.tar.bz2": bz2.compress(tar_of("a.jpg", photo(6))),
    "photos.tar.xz": lzma.compress(tar_of("a.jpg", photo(6))),
    "photos.7z": b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(200),
    "photos.rar": b"Rar!\x1a\x07\x01\x00" + bytes(200),
}


def test_archives_inside_an_archive_are_refused_and_the_other_members_added(staff_client):
    entries = [("first.jpg", photo(1)), *NESTED.items(), ("last.jpg", photo(2))]
    response = staff_client.post(ADD_URL, {"files": [zip_upload("nested.zip", entries)]})

    assert response.status_code == 200
    rows = result_rows(response)
    assert list(rows) == [f"nested.zip: {name}" for name, _ in entries]
    assert rows["nested.zip: first.jpg"].status == rows["nested.zip: last.jpg"].status == "added"
    for name in NESTED:
        assert rows[f"nested.zip: {name}"].error == "Archives inside archives are not accepted.", name
    assert sorted(Image.objects.values_list("original_name", flat=True)) == ["first.jpg", "last.jpg"]


def test_a_member_that_meets_a_bug_is_refused_alone(staff_client, monkeypatch, caplog):
    from gallery import services

    inspect_image = services.inspect_image

    def inspect(upload):
        if upload.name == "b.jpg":
            raise KeyError("a bug met while validating")
        return inspect_image(upload)

    monkeypatch.setattr(services, "inspect_image", inspect)
    archive = zip_upload("three.zip", [("a.jpg", photo(1)), ("b.jpg", photo(2)), ("c.jpg", photo(3))])

    response = staff_client.post(ADD_URL, {"files": [archive]})

    rows = result_rows(response)
    assert [row.status for row in rows.values()] == ["added", "refused", "added"]
    assert "unexpected error" in rows["three.zip: b.jpg"].error
    assert sorted(Image.objects.values_list("original_name", flat=True)) == ["a.jpg", "c.jpg"]
    assert len([record for record in caplog.records if record.levelname == "ERROR"]) == 1
