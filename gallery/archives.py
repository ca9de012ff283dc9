"""Zip archives uploaded in the admin, opened safely.

Nothing is ever written under a name taken from the archive: each member is copied to an
anonymous temporary file and then goes through the same validation as an uploaded file.
Limits (member count, total uncompressed bytes) are checked before anything is added, on
the bytes actually decompressed rather than the sizes the archive declares, so a limit that
trips refuses the whole archive and adds nothing from it.
"""

from __future__ import annotations

import os
import re
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.template.defaultfilters import filesizeformat

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a first entry, or an empty archive
# Archives inside an archive are refused, whatever their kind: one level is opened, under
# limits checked on the bytes it really holds; each nested level would multiply what a small
# upload can unpack, and would need limits and damage checks of its own.
ARCHIVE_SIGNATURES = (
    b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08",  # zip (a first entry, empty, spanned)
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"(\xb5/\xfd",  # zstandard
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR 4 and 5
    b"MSCF",  # cabinet
)
TAR_MAGIC, TAR_MAGIC_OFFSET = b"ustar", 257
NESTED_ARCHIVE_ERROR = "Archives inside archives are not accepted."
# Folders and files that archiving tools add on their own; skipped without a word.
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
DISPLAY_PATH_MAX_LENGTH = 200
CHUNK_BYTES = 1024 * 1024
SYMLINK_MODE = 0o120000


@dataclass
class ArchiveMember:
    """One entry worth reporting: a file to validate (``upload``) or the reason it was refused."""

    path: str
    upload: TemporaryUploadedFile | None = None
    error: str = ""


@dataclass
class ExtractedArchive:
    """The members of an archive, copied out; use as a context manager to delete the copies."""

    members: list[ArchiveMember] = field(default_factory=list)

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __enter__(self) -> ExtractedArchive:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for member in self.members:
            if member.upload is not None:
                member.upload.close()  # a TemporaryUploadedFile is deleted when closed


def _directory_starts_the_file(archive: zipfile.ZipFile) -> bool:
    """Whether the directory zipfile found describes this file from its first byte.

    zipfile searches the end of the file for a directory and, when the one it finds sits
    after where it claims to be, reads it as an archive appended to other data. An upload
    starts with a zip signature (``is_zip_archive``), so such a shift can only mean damage:
    most often an archive cut short, whose own directory is gone, leaving that of a zip stored
    inside it to be found and read in its place.
    """
    entries = archive.infolist()
    if not entries:
        return archive.start_dir == 0  # an empty archive is its end record alone
    return min(entry.header_offset for entry in entries) == 0


def _head(upload, length: int) -> bytes:
    upload.seek(0)
    head = upload.read(length)
    upload.seek(0)
    return head


def is_archive(upload) -> bool:
    """Whether the file is an archive or compressed stream of a common kind, by its first bytes."""
    head = _head(upload, TAR_MAGIC_OFFSET + len(TAR_MAGIC))
    return head.startswith(ARCHIVE_SIGNATURES) or head[TAR_MAGIC_OFFSET:].startswith(TAR_MAGIC)


def is_zip_archive(upload) -> bool:
    """Judged by the first bytes, not by the name or the declared content type."""
    return _head(upload, 4) in ZIP_SIGNATURES


def display_path(name: str) -> str:
    """A member's path as shown to people: forward slashes, no control characters, bounded."""
    name = "".join(ch for ch in name.replace("\\", "/") if unicodedata.category(ch)[0] != "C").strip()
    if len(name) > DISPLAY_PATH_MAX_LENGTH:
        name = "…" + name[-(DISPLAY_PATH_MAX_LENGTH - 1) :]
    return name or "unnamed"


def is_unsafe_path(name: str) -> bool:
    """Absolute paths, drive letters and '..' parts: an extractor writing them would escape."""
    name = name.replace("\\", "/")
    return name.startswith("/") or bool(re.match(r"^[A-Za-z]:", name)) or ".." in PurePosixPath(name).parts


def is_junk(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and ("__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] in JUNK_NAMES)


def _refused(message: str, code: str, **params) -> ValidationError:
    return ValidationError(message + " Nothing from the archive was added.", code=code, params=params)


def _declared_entry_count(upload) -> int | None:
    """The entry count from the end-of-archive record, read before the directory is parsed."""
    upload.seek(0, os.SEEK_END)
    size = upload.tell()
    tail_length = min(size, 22 + 0xFFFF)  # the record, and the longest comment after it
    upload.seek(size - tail_length)
    tail = upload.read(tail_length)
    upload.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    return None if entries == 0xFFFF else entries  # 0xFFFF: the real count is in a zip64 record


def _too_many_members(count: int, max_members: int) -> ValidationError:
    return _refused(
        "The archive holds %(count)s entries; at most %(max)s are accepted.",
        code="zip_too_many_members",
        count=count,
        max=max_members,
    )


def _too_large_uncompressed(max_total: int) -> ValidationError:
    return _refused(
        "The archive holds more than %(max)s once uncompressed; that is the limit.",
        code="zip_too_large",
        max=filesizeformat(max_total),
    )


def zip_limits_check(*, upload) -> None:
    """Raise ValidationError if the archive's own size or its declared entry count breaks a limit.

    Cheap (the end record only), so an archive can be refused when it arrives, before it is
    kept for a worker to open; ``zip_members`` checks the same first, then the real bytes.
    """
    max_total = settings.ZIP_MAX_TOTAL_BYTES
    if upload.size > max_total:
        raise _refused(
            "The archive is too large (%(size)s); the limit is %(max)s.",
            code="zip_too_large",
            size=filesizeformat(upload.size),
            max=filesizeformat(max_total),
        )
    declared = _declared_entry_count(upload)
    if declared is not None and declared > settings.ZIP_MAX_MEMBERS:
        raise _too_many_members(declared, settings.ZIP_MAX_MEMBERS)


def folder_names(path: str) -> list[str]:
    """'trip/day 1/IMG_1.jpg' -> ['trip', 'day 1']: the folders of a relative path, outermost first.

    Empty, '.' and '..' parts name no folder.
    """
    parts = PurePosixPath(path.replace("\\", "/")).parts[:-1]
    return [part for part in parts if part not in ("", ".", "..", "/")]


def zip_members(*, upload) -> ExtractedArchive:
    """Copy out every member worth reporting, or raise ValidationError refusing the whole archive.

    Folders and tool-made junk (``__MACOSX/``, ``._*``, ``.DS_Store``) are skipped silently;
    unsafe paths, links, encrypted or damaged entries and entries over the per-file size
    limit come back with a reason, for the caller to report.
    """
    max_members = settings.ZIP_MAX_MEMBERS
    max_total = settings.ZIP_MAX_TOTAL_BYTES
    max_member = settings.IMAGE_MAX_UPLOAD_BYTES
    zip_limits_check(upload=upload)
    damaged = ValidationError(
        "The file looks like a zip archive but cannot be opened: it is damaged or incomplete.",
        code="zip_damaged",
    )
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError):
        raise damaged from None
    if not _directory_starts_the_file(archive):
        archive.close()
        raise damaged

    extracted = ExtractedArchive()
    try:
        with archive:
            entries = archive.infolist()
            if len(entries) > max_members:
                raise _too_many_members(len(entries), max_members)
            if sum(entry.file_size for entry in entries) > max_total:
                raise _too_large_uncompressed(max_total)
            total = 0
            for entry in entries:
                if entry.is_dir() or is_junk(entry.filename):
                    continue
                member = ArchiveMember(path=display_path(entry.filename))
                extracted.members.append(member)
                if is_unsafe_path(entry.filename):
                    member.error = "Its path inside the archive is unsafe (absolute, or with '..')."
                elif (entry.external_attr >> 16) & 0o170000 == SYMLINK_MODE:
                    member.error = "Symbolic links are not accepted."
                elif entry.flag_bits & 0x1:
                    member.error = "Encrypted entries are not accepted."
                else:
                    total = _copy_out(archive, entry, member, total=total, max_total=max_total, max_member=max_member)
                    if member.upload is not None and is_archive(member.upload):
                        member.error = NESTED_ARCHIVE_ERROR
                        member.upload.close()
                        member.upload = None
    except BaseException:
        extracted.close()
        raise
    return extracted


def _copy_out(archive, entry, member: ArchiveMember, *, total: int, max_total: int, max_member: int) -> int:
    """Decompress one entry into a temporary file, counting real bytes; returns the new total."""
    copy = TemporaryUploadedFile(os.path.basename(member.path), "application/octet-stream", 0, None)
    member.upload = copy
    size = 0
    try:
        with archive.open(entry) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                total += len(chunk)
                if total > max_total:
                    raise _too_large_uncompressed(max_total)
                if size > max_member:
                    member.error = (
                        f"The file is too large (more than {filesizeformat(max_member)} once "
                        f"uncompressed); the limit is {filesizeformat(max_member)}."
                    )
                    break
                copy.write(chunk)
    except NotImplementedError:
        member.error = "It is compressed with a method that is not supported."
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        member.error = f"The entry is damaged and cannot be extracted ({error or type(error).__name__})."
    if member.error:
        member.upload = None
        copy.close()
    else:
        copy.size = size
        copy.seek(0)
    return total
