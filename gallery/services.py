"""Writes to the gallery: adding images (one, many, archives, folders), near-duplicate flags."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from similarity.pipeline import embeddings_request
from similarity.selectors import nearest_neighbours_of
from similarity.weights import model_identity

from . import invalidation
from .archives import display_path, folder_names, is_zip_archive, zip_limits_check, zip_members
from .models import ArchiveUpload, Image, Tag
from .pipeline import archive_upload_send, images_follow_up_enqueue
from .selectors import images_with_sha256
from .storage import stored_file_delete
from .validation import clean_original_name, file_sha256, inspect_image

logger = logging.getLogger(__name__)

UNEXPECTED_ERROR = "It could not be added: an unexpected error, logged for the administrators."
ARCHIVE_NOT_QUEUED = "The archive could not be queued for a worker (the task queue is unreachable); send it again."


class DuplicateImageError(Exception):
    """The same bytes are already in the gallery."""

    def __init__(self, existing: Image):
        self.existing = existing
        super().__init__(f"Already in the gallery as image {existing.pk} ({existing}).")


@dataclass(frozen=True)
class UploadOutcome:
    """What happened to one uploaded file: added, a duplicate, or refused with a reason."""

    name: str
    image: Image | None = None
    duplicate_of: Image | None = None
    error: str = ""
    archive: str = ""  # the zip archive the file came out of, if any
    # A zip archive sent on its own (``image_upload``): kept for a worker to expand.
    queued_archive: ArchiveUpload | None = None

    @property
    def status(self) -> str:
        if self.queued_archive is not None:
            return "archive"
        if self.image is not None:
            return "added"
        if self.duplicate_of is not None:
            return "duplicate"
        return "refused"


def caption_from_filename(name: str) -> str:
    """'IMG_2041-sunset_at_the-beach.jpg' -> 'IMG 2041 sunset at the beach'."""
    stem = os.path.splitext(name)[0]
    return re.sub(r"[\s_\-.]+", " ", stem).strip()[:300]


def image_create(
    *, upload, caption: str = "", tag_names: Iterable[str] = (), uploaded_by=None, enqueue: bool = True
) -> Image:
    """Validate and store one uploaded image with its tags, then queue its follow-up work once committed.

    The row, its tags and its file are one transaction: the image's embedding and renditions
    are published when that transaction commits (``enqueue``), whatever happens to other files
    of the same batch. Raises ValidationError for a file that is not an acceptable image and
    DuplicateImageError when the same content is already stored. Either way nothing is
    written: no row, no file, no task.
    """
    facts = inspect_image(upload)
    existing = Image.objects.filter(sha256=facts.sha256).first()
    if existing is not None:
        raise DuplicateImageError(existing)

    original_name = clean_original_name(upload.name)
    image = Image(
        original_name=original_name,
        caption=(caption or "").strip()[:300] or caption_from_filename(original_name),
        format=facts.format,
        width=facts.width,
        height=facts.height,
        file_size=facts.file_size,
        sha256=facts.sha256,
        uploaded_by=uploaded_by,
    )
    tag_names = list(tag_names)
    try:
        with transaction.atomic():
            image.file.save(original_name, upload, save=False)
            image.save()
            if tag_names:
                images_tag(image_ids=[image.pk], names=tag_names)
            # Its row for the configured model, pending: without enqueue, the sweeper sends it.
            embeddings_request(image_ids=[image.pk], enqueue=False)
            if enqueue:
                images_follow_up_enqueue(image_ids=[image.pk])
    except IntegrityError:
        # Another upload of the same bytes won the race for the unique hash.
        stored_file_delete(image.file)
        existing = Image.objects.filter(sha256=facts.sha256).first()
        if existing is None:
            raise
        raise DuplicateImageError(existing) from None
    except BaseException:
        stored_file_delete(image.file)
        raise
    return image


def _unexpected_failure(name: str, archive: str = "") -> UploadOutcome:
    """A bug met while adding one file: that file is refused, the rest of the batch goes on."""
    logger.exception("Adding %r failed unexpectedly", name, extra={"upload_name": name, "archive": archive})
    return UploadOutcome(name=name, error=UNEXPECTED_ERROR, archive=archive)


def _upload_outcome(
    *, upload, name: str, caption: str, tag_names: Iterable[str] = (), uploaded_by, archive: str = ""
) -> UploadOutcome:
    """Add one file on its own: whatever becomes of it, an outcome and never an exception."""
    try:
        image = image_create(upload=upload, caption=caption, tag_names=tag_names, uploaded_by=uploaded_by)
    except ValidationError as error:
        return UploadOutcome(name=name, error=" ".join(error.messages), archive=archive)
    except DuplicateImageError as error:
        return UploadOutcome(name=name, duplicate_of=error.existing, archive=archive)
    except Exception:
        return _unexpected_failure(name, archive)
    return UploadOutcome(name=name, image=image, archive=archive)


def _archive_outcomes(*, upload, name: str, caption: str, tag_names: list[str], uploaded_by) -> list[UploadOutcome]:
    """Each member of a zip archive added on its own, or the whole archive refused with the reason."""
    try:
        members = zip_members(upload=upload)
    except ValidationError as error:
        return [UploadOutcome(name=name, error=" ".join(error.messages), archive=name)]
    except Exception:
        return [_unexpected_failure(name, name)]
    outcomes = []
    with members:
        if not len(members):
            outcomes.append(UploadOutcome(name=name, error="The archive holds no files.", archive=name))
        for member in members:
            member_name = f"{name}: {member.path}"
            if member.error:
                outcomes.append(UploadOutcome(name=member_name, error=member.error, archive=name))
                continue
            outcomes.append(
                _upload_outcome(
                    upload=member.upload,
                    name=member_name,
                    caption=caption,
                    tag_names=tag_names,
                    uploaded_by=uploaded_by,
                    archive=name,
                )
            )
    return outcomes


def images_create(
    *, uploads, caption: str = "", tag_names: Iterable[str] = (), uploaded_by=None
) -> list[UploadOutcome]:
    """Add many files, each with the caption and tags; every file has an outcome, in order.

    Each file succeeds or fails on its own, in a transaction of its own, and an added image's
    follow-up work is published as soon as it commits: a file that is refused, or that meets
    a bug, takes nothing else down with it. A zip archive among them is opened and each of its
    images is added like a file of its own; an archive that breaks a limit, or is damaged, is
    refused whole, before anything from it is added.
    """
    tag_names = list(tag_names)
    outcomes = []
    for upload in uploads:
        name = clean_original_name(upload.name)
        try:
            is_archive = is_zip_archive(upload)
        except Exception:
            outcomes.append(_unexpected_failure(name))
            continue
        if is_archive:
            outcomes += _archive_outcomes(
                upload=upload, name=name, caption=caption, tag_names=tag_names, uploaded_by=uploaded_by
            )
        else:
            outcomes.append(
                _upload_outcome(
                    upload=upload, name=name, caption=caption, tag_names=tag_names, uploaded_by=uploaded_by
                )
            )
    return outcomes


def _known_or_added(
    *, upload, name: str, caption: str, tag_names: list[str], uploaded_by, archive: str = ""
) -> UploadOutcome:
    """Add one file, or find its content already in the gallery by its hash before decoding it.

    What is found costs one read, and still gets the tags: importing a folder again, or
    dropping it again on the upload page, tags what is already there.
    """
    existing = None
    if upload.size <= settings.IMAGE_MAX_UPLOAD_BYTES:  # a larger file is refused unread below
        existing = Image.objects.filter(sha256=file_sha256(upload)).first()
    if existing is None:
        outcome = _upload_outcome(
            upload=upload, name=name, caption=caption, tag_names=tag_names, uploaded_by=uploaded_by, archive=archive
        )
        existing = outcome.duplicate_of
    else:
        outcome = UploadOutcome(name=name, duplicate_of=existing, archive=archive)
    if existing is not None and tag_names:
        images_tag(image_ids=[existing.pk], names=tag_names)
    return outcome


def image_import_file(
    *, path: Path, name: str = "", caption: str = "", tag_names: Iterable[str] = (), uploaded_by=None
) -> UploadOutcome:
    """Add one file from disk with its caption and tags, as the import command does.

    Never raises for a file: a file that cannot be read, is refused, or meets a bug comes back
    as refused with the reason. An added image's follow-up work is published once it commits.
    Content already in the gallery is recognised by its hash before the file is decoded, so
    importing a folder again costs one read per file; it still gets the tags.
    """
    name = name or path.name
    tag_names = list(tag_names)
    try:
        handle = path.open("rb")
    except OSError as error:
        return UploadOutcome(name=name, error=f"The file cannot be read ({error.strerror or error}).")
    try:
        with handle:
            upload = File(handle, name=path.name)
            return _known_or_added(upload=upload, name=name, caption=caption, tag_names=tag_names, uploaded_by=uploaded_by)
    except OSError as error:
        return UploadOutcome(name=name, error=f"The file cannot be read ({error.strerror or error}).")
    except Exception:
        return _unexpected_failure(name)


# --- Uploads one file at a time (the upload API) -------------------------------------------


def image_upload(
    *, upload, path: str = "", caption: str = "", tag_names: Iterable[str] = (), folder_tags: bool = False,
    uploaded_by=None,
) -> UploadOutcome:
    """One file sent on its own (the admin's upload page, scripts): added, already in the
    gallery, refused with the reason, or, for a zip archive, kept for a worker to expand.

    ``path`` is the file's place in the folder it was dropped with ("trip/day1/IMG_1.jpg"):
    the name the outcome reports; with ``folder_tags`` each of its folders becomes a tag. A
    file is judged as ``import_images`` judges one of a folder (the admin form's validation,
    content already there found by its hash and given the tags); an archive is checked
    against the limits it can be judged by unopened, then stored and queued, so no request
    waits for one. Never raises for a file.
    """
    name = display_path(path) if path.strip() else clean_original_name(upload.name)
    tag_names = [*tag_names, *(folder_names(name) if folder_tags else [])]
    try:
        if is_zip_archive(upload):
            try:
                zip_limits_check(upload=upload)
            except ValidationError as error:
                return UploadOutcome(name=name, error=" ".join(error.messages), archive=name)
            archive = archive_upload_create(
                upload=upload, name=name, caption=caption, tag_names=tag_names, folder_tags=folder_tags,
                uploaded_by=uploaded_by,
            )
            if archive.state == ArchiveUpload.State.FAILED:
                return UploadOutcome(name=name, error=archive.error, archive=name)
            return UploadOutcome(name=name, queued_archive=archive)
        if path.strip():
            upload.name = clean_original_name(name)  # the stored original name: the path's file name
        return _known_or_added(
            upload=upload, name=name, caption=caption, tag_names=tag_names, uploaded_by=uploaded_by
        )
    except Exception:
        return _unexpected_failure(name)


def upload_check(*, hashes: Iterable[str], tag_names: Iterable[str] = ()) -> list[Image]:
    """The images whose content hash is among ``hashes``: files the page need not send.

    They get ``tag_names``, as a file sent again would (``image_upload``), so a duplicate that
    is never sent still gets the drop's tags.
    """
    hashes = set(hashes)
    tag_names = list(tag_names)
    known = images_with_sha256(hashes=hashes)
    if known and tag_names:
        images_tag(image_ids=[image.pk for image in known], names=tag_names)
        known = images_with_sha256(hashes=hashes)  # with their new tags
    return known


def archive_upload_create(
    *, upload, name: str, caption: str = "", tag_names: Iterable[str] = (), folder_tags: bool = False,
    uploaded_by=None,
) -> ArchiveUpload:
    """Keep a zip archive in the private storage and queue a worker to expand it, once committed.

    An archive that could not be queued comes back failed, its file deleted.
    """
    archive = ArchiveUpload(
        name=name, caption=(caption or "").strip()[:300], tag_names=list(tag_names), folder_tags=folder_tags,
        uploaded_by=uploaded_by,
    )
    try:
        with transaction.atomic():
            archive.file.save("archive.zip", upload, save=False)
            archive.save()
            transaction.on_commit(lambda: archive_upload_publish(archive_id=archive.pk))
    except BaseException:
        stored_file_delete(archive.file)
        raise
    archive.refresh_from_db()  # failed, when the queue could not be reached
    return archive


def archive_upload_publish(*, archive_id: int) -> bool:
    """Send the archive to a worker; False, and the archive failed, when the broker is unreachable."""
    if archive_upload_send(archive_id=archive_id):
        return True
    archive_upload_finish(archive_id=archive_id, state=ArchiveUpload.State.FAILED, error=ARCHIVE_NOT_QUEUED)
    return False


def archive_upload_finish(*, archive_id: int, state: str, error: str = "") -> ArchiveUpload:
    """Mark the archive done or failed (unless it is already finished), then delete its file.

    The state is committed before the file goes: a run stopped in between finds the archive
    finished, and only deletes the file.
    """
    with transaction.atomic():
        archive = ArchiveUpload.objects.select_for_update().get(pk=archive_id)
        if not archive.is_finished:
            archive.state, archive.error, archive.finished_at = state, error, timezone.now()
            archive.save(update_fields=["state", "error", "finished_at", "updated_at"])
    if archive.file.name:
        stored_file_delete(archive.file)
        ArchiveUpload.objects.filter(pk=archive_id).update(file="")
        archive.file.name = ""
    return archive


def archive_upload_expand(*, archive_id: int, seconds: float | None = None) -> ArchiveUpload | None:
    """Add each member of a stored archive as an upload of its own, counting as it goes.

    Each member's image and the archive's counts are one transaction, taken under a lock on
    the archive's row: a run resumed after a crash, or a second run beside the first, skips
    the members already counted, so no image is lost or counted twice. Stops after about
    ``seconds`` with the archive still expanding, for another run to resume; returns the
    archive (None when it no longer exists).
    """
    started = time.monotonic()
    archive = ArchiveUpload.objects.select_related("uploaded_by").filter(pk=archive_id).first()
    if archive is None:
        return None
    if archive.is_finished:
        return archive_upload_finish(archive_id=archive_id, state=archive.state)  # its file, if still there
    ArchiveUpload.objects.filter(pk=archive_id, state=ArchiveUpload.State.QUEUED).update(
        state=ArchiveUpload.State.EXPANDING, updated_at=timezone.now()
    )
    try:
        handle = archive.file.open("rb")
    except (FileNotFoundError, ValueError):  # ValueError: no file name (deleted)
        return archive_upload_finish(
            archive_id=archive_id, state=ArchiveUpload.State.FAILED, error="The stored archive is missing."
        )
    with handle:
        try:
            members = zip_members(upload=handle)
        except ValidationError as error:
            return archive_upload_finish(
                archive_id=archive_id, state=ArchiveUpload.State.FAILED, error=" ".join(error.messages)
            )
    with members:
        if not len(members):
            return archive_upload_finish(
                archive_id=archive_id, state=ArchiveUpload.State.FAILED, error="The archive holds no files."
            )
        ArchiveUpload.objects.filter(pk=archive_id).update(members_total=len(members), updated_at=timezone.now())
        for index, member in enumerate(members):
            counted = _archive_member_add(archive=archive, index=index, member=member)
            # At least one member per run, so that every run moves the archive on.
            if counted and seconds is not None and time.monotonic() - started > seconds and index + 1 < len(members):
                archive.refresh_from_db()
                return archive
    return archive_upload_finish(archive_id=archive_id, state=ArchiveUpload.State.DONE)


def _archive_member_add(*, archive: ArchiveUpload, index: int, member) -> bool:
    """Add the archive's member number ``index`` and count it; False when a run already had."""
    name = f"{archive.name}: {member.path}"
    with transaction.atomic():
        done, refusals = (
            ArchiveUpload.objects.select_for_update().values_list("members_done", "refusals").get(pk=archive.pk)
        )
        if done > index:
            return False
        if member.error:
            outcome = UploadOutcome(name=name, error=member.error, archive=archive.name)
        else:
            tag_names = [*archive.tag_names, *(folder_names(member.path) if archive.folder_tags else [])]
            outcome = _known_or_added(
                upload=member.upload, name=name, caption=archive.caption, tag_names=tag_names,
                uploaded_by=archive.uploaded_by, archive=archive.name,
            )
        counts = {"members_done": F("members_done") + 1, "updated_at": timezone.now()}
        if outcome.status == "added":
            counts["added"] = F("added") + 1
        elif outcome.status == "duplicate":
            counts["duplicates"] = F("duplicates") + 1
        else:
            counts["refused"] = F("refused") + 1
            if len(refusals) < ArchiveUpload.REFUSALS_KEPT:
                counts["refusals"] = [*refusals, {"name": name, "reason": outcome.error}]
        ArchiveUpload.objects.filter(pk=archive.pk).update(**counts)
    return True


def near_duplicates_mark(*, image_ids: Iterable[int], identity: str | None = None) -> int:
    """Flag images whose nearest neighbour is at least NEAR_DUPLICATE_THRESHOLD similar.

    The flag points to that neighbour, and the neighbour, if it has no flag of its own, gets
    one pointing back: a pair is listed together whichever of the two was embedded first.
    An image no longer that close to anything loses its flag. Returns how many are flagged.

    Set-based, so a batch costs the same few statements whatever its size: one
    nearest-neighbour query, then one UPDATE for the batch's own flags and one for the
    pointers back (the worker runs this per batch, between forward passes).
    """
    image_ids = sorted(set(image_ids))
    if not image_ids:
        return 0
    identity = identity or model_identity()
    threshold = settings.NEAR_DUPLICATE_THRESHOLD
    nearest = nearest_neighbours_of(image_ids=image_ids, identity=identity)
    close = {image_id: found for image_id, found in nearest.items() if found[1] >= threshold}
    neighbours = [close[image_id][0] if image_id in close else None for image_id in image_ids]
    similarities = [close[image_id][1] if image_id in close else None for image_id in image_ids]
    table = connection.ops.quote_name(Image._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        # Each image of the batch: its flag, or none; rows already right are not rewritten.
        cursor.execute(
            f"""
            UPDATE {table} image
            SET near_duplicate_of_id = batch.neighbour_id, near_duplicate_similarity = batch.similarity
            FROM unnest(%s::bigint[], %s::bigint[], %s::double precision[]) AS batch(id, neighbour_id, similarity)
            WHERE image.id = batch.id
              AND (image.near_duplicate_of_id, image.near_duplicate_similarity)
                  IS DISTINCT FROM (batch.neighbour_id, batch.similarity)
            """,
            [image_ids, neighbours, similarities],
        )
        if close:
            # The neighbours without a flag point back; when several images of the batch
            # share one, the lowest id wins, as it did when they were flagged one by one.
            cursor.execute(
                f"""
                UPDATE {table} image
                SET near_duplicate_of_id = back.image_id, near_duplicate_similarity = back.similarity
                FROM (
                    SELECT DISTINCT ON (neighbour_id) neighbour_id, image_id, similarity
                    FROM unnest(%s::bigint[], %s::bigint[], %s::double precision[])
                        AS pair(image_id, neighbour_id, similarity)
                    ORDER BY neighbour_id, image_id
                ) back
                WHERE image.id = back.neighbour_id AND image.near_duplicate_of_id IS NULL
                """,
                [list(close), [found[0] for found in close.values()], [found[1] for found in close.values()]],
            )
    return len(close)


def tag_names_too_long(names: Iterable[str]) -> str:
    """Why these tag names cannot be used as given ("" when they can): one is over the length."""
    too_long = [name for name in names if len(name) > TAG_NAME_MAX_LENGTH]
    if not too_long:
        return ""
    return (
        f"A tag name has at most {TAG_NAME_MAX_LENGTH} characters, "
        f"and “{too_long[0][:TAG_NAME_MAX_LENGTH]}…” has {len(too_long[0])}."
    )


def tags_from_text(text: str) -> list[str]:
    """'harbour, night; boats' -> ['harbour', 'night', 'boats']: commas or semicolons, blanks dropped.

    Names keep their length, so that a form can say which is too long.
    """
    names = (name.replace("\x00", "").strip() for name in re.split(r"[,;]", text or ""))
    return [name for name in names if name]


TAG_NAME_MAX_LENGTH = Tag._meta.get_field("name").max_length
TAG_SLUG_MAX_LENGTH = Tag._meta.get_field("slug").max_length


def tag_name_clean(name: str) -> str:
    """A name as it is stored: without what PostgreSQL text cannot hold (NUL, lone surrogates,
    which only a JSON escape can make) or spaces at either end, cut to the column's length.
    Empty means no tag."""
    return re.sub("[\x00\ud800-\udfff]", "", name).strip()[:TAG_NAME_MAX_LENGTH].rstrip()


def _tag_slug_candidates(name: str) -> Iterator[str]:
    """Slugs for a new tag's name, best first, each one fitting the column.

    The Unicode slug of the name comes first. It is cut after slugify's normalisation, which
    can make it longer than the name ("ﷺ" is one character and eighteen letters). Then, for a
    slug already taken or a name with no letters or digits ("%%%"), the same with a hash of
    the name after it, so that distinct names get distinct slugs.
    """
    base = slugify(name, allow_unicode=True)[:TAG_SLUG_MAX_LENGTH].rstrip("-_")
    if base:
        yield base
    digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    for length in (8, 16, 32):
        stem = (base or "tag")[: TAG_SLUG_MAX_LENGTH - length - 1].rstrip("-_")
        yield f"{stem}-{digest[:length]}"
    # Only a slug chosen to equal this name's hashed one gets this far.
    stem = (base or "tag")[: TAG_SLUG_MAX_LENGTH - 20].rstrip("-_")
    for number in itertools.count(2):
        yield f"{stem}-{digest[:8]}-{number}"


def _tag_get_or_create(name: str) -> Tag:
    tag = Tag.objects.filter(name__iexact=name).first()
    if tag is not None:
        return tag
    for slug in _tag_slug_candidates(name):
        if Tag.objects.filter(slug=slug).exists():
            continue
        try:
            with transaction.atomic():
                return Tag.objects.create(name=name, slug=slug)
        except IntegrityError:
            # Made meanwhile by another request: then the name is found; else the slug is skipped.
            tag = Tag.objects.filter(name__iexact=name).first()
            if tag is not None:
                return tag
    raise AssertionError("unreachable: the slug candidates do not run out")


def tags_get_or_create(*, names: Iterable[str]) -> list[Tag]:
    """The tags with these names, made when new, in the order given, each once.

    A name is matched whatever its case ("harbour" is the tag "Harbour"), and stored as
    ``tag_name_clean`` leaves it. Each tag has a slug of its own, whatever its name.
    """
    tags = {}
    for name in dict.fromkeys(filter(None, map(tag_name_clean, names))):
        tag = _tag_get_or_create(name)
        tags.setdefault(tag.pk, tag)
    return list(tags.values())


def images_tag(*, image_ids: Iterable[int], names: Iterable[str]) -> list[Tag]:
    """Add these tags to these images (bulk), keeping the tags they have."""
    tags = tags_get_or_create(names=names)
    through = Image.tags.through
    with transaction.atomic():
        through.objects.bulk_create(
            [through(image_id=image_id, tag_id=tag.pk) for image_id in image_ids for tag in tags],
            ignore_conflicts=True,
        )
    invalidation.images_tagged()
    return tags


def image_update(*, image: Image, caption: str | None = None, tag_names: Iterable[str] | None = None) -> Image:
    """Change an image's caption and/or replace its tags (None leaves that part as it is).

    Saving the caption and replacing the tags through the M2M manager send the signals that
    drop the cached pages (gallery.invalidation).
    """
    with transaction.atomic():
        if caption is not None:
            image.caption = caption
            image.save(update_fields=["caption"])
        if tag_names is not None:
            image.tags.set(tags_get_or_create(names=tag_names))
    return image
