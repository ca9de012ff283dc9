"""Writes to the gallery: adding images (one, many, archives, folders) and their renditions."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image as PILImage

from similarity.imaging import UndecodableImage, load_rgb
from similarity.services import embeddings_publish

from .archives import is_zip_archive, zip_members
from .models import RENDITION_WIDTHS, Image, Rendition
from .validation import clean_original_name, file_sha256, inspect_image

logger = logging.getLogger(__name__)


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

    @property
    def status(self) -> str:
        if self.image is not None:
            return "added"
        if self.duplicate_of is not None:
            return "duplicate"
        return "refused"


def caption_from_filename(name: str) -> str:
    """'IMG_2041-sunset_at_the-beach.jpg' -> 'IMG 2041 sunset at the beach'."""
    stem = os.path.splitext(name)[0]
    return re.sub(r"[\s_\-.]+", " ", stem).strip()[:300]


def images_processing_publish(*, image_ids: list[int]) -> None:
    """Send the work new images need: embeddings and renditions (a broker outage is logged)."""
    embeddings_publish(image_ids=image_ids)
    renditions_publish(image_ids=image_ids)


def images_processing_enqueue(*, image_ids: Iterable[int]) -> None:
    """Queue embeddings and renditions once the current transaction commits."""
    image_ids = list(image_ids)
    if image_ids:
        transaction.on_commit(lambda: images_processing_publish(image_ids=image_ids))


def image_create(*, upload, caption: str = "", uploaded_by=None, enqueue: bool = True) -> Image:
    """Validate and store one uploaded image, then queue its embedding and renditions once committed.

    Raises ValidationError for a file that is not an acceptable image and
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
    try:
        with transaction.atomic():
            image.file.save(original_name, upload, save=False)
            image.save()
            if enqueue:
                images_processing_enqueue(image_ids=[image.pk])
    except IntegrityError:
        # Another upload of the same bytes won the race for the unique hash.
        _delete_stored_file(image)
        existing = Image.objects.filter(sha256=facts.sha256).first()
        if existing is None:
            raise
        raise DuplicateImageError(existing) from None
    except BaseException:
        _delete_stored_file(image)
        raise
    return image


def _upload_outcome(*, upload, name: str, caption: str, uploaded_by, archive: str = "") -> UploadOutcome:
    try:
        image = image_create(upload=upload, caption=caption, uploaded_by=uploaded_by, enqueue=False)
    except ValidationError as error:
        return UploadOutcome(name=name, error=" ".join(error.messages), archive=archive)
    except DuplicateImageError as error:
        return UploadOutcome(name=name, duplicate_of=error.existing, archive=archive)
    return UploadOutcome(name=name, image=image, archive=archive)


def images_create(*, uploads, caption: str = "", uploaded_by=None) -> list[UploadOutcome]:
    """Add many files; each succeeds or fails on its own. Follow-up work is queued once, on commit.

    A zip archive among them is opened and each of its images is added like a file of its
    own; an archive that breaks a limit is refused whole, before anything from it is added.
    """
    outcomes = []
    for upload in uploads:
        name = clean_original_name(upload.name)
        if not is_zip_archive(upload):
            outcomes.append(_upload_outcome(upload=upload, name=name, caption=caption, uploaded_by=uploaded_by))
            continue
        try:
            members = zip_members(upload=upload)
        except ValidationError as error:
            outcomes.append(UploadOutcome(name=name, error=" ".join(error.messages), archive=name))
            continue
        with members:
            if not len(members):
                outcomes.append(UploadOutcome(name=name, error="The archive holds no files.", archive=name))
            for member in members:
                member_name = f"{name}: {member.path}"
                if member.error:
                    outcomes.append(UploadOutcome(name=member_name, error=member.error, archive=name))
                else:
                    outcomes.append(
                        _upload_outcome(
                            upload=member.upload,
                            name=member_name,
                            caption=caption,
                            uploaded_by=uploaded_by,
                            archive=name,
                        )
                    )
    images_processing_enqueue(image_ids=[outcome.image.pk for outcome in outcomes if outcome.image is not None])
    return outcomes


def image_import_file(*, path: Path, name: str = "", caption: str = "", uploaded_by=None) -> UploadOutcome:
    """Add one file from disk, as the import command does; nothing is queued (the caller batches).

    Content already in the gallery is recognised by its hash before the file is decoded, so
    importing a folder again costs one read per file.
    """
    name = name or path.name
    try:
        handle = path.open("rb")
    except OSError as error:
        return UploadOutcome(name=name, error=f"The file cannot be read ({error.strerror or error}).")
    with handle:
        upload = File(handle, name=path.name)
        if upload.size <= settings.IMAGE_MAX_UPLOAD_BYTES:  # a larger file is refused unread below
            existing = Image.objects.filter(sha256=file_sha256(upload)).first()
            if existing is not None:
                return UploadOutcome(name=name, duplicate_of=existing)
        return _upload_outcome(upload=upload, name=name, caption=caption, uploaded_by=uploaded_by)


def _delete_stored_file(row: Image | Rendition) -> None:
    if row.file and row.file.name:
        try:
            row.file.storage.delete(row.file.name)
        except OSError:
            logger.warning("Could not remove %s after a failed write", row.file.name, exc_info=True)


# --- Renditions -----------------------------------------------------------------------

# Renditions are quick (tens of milliseconds each); a batch keeps the message count low.
RENDITIONS_PER_TASK = 50


def _render(picture: PILImage.Image, *, spec: int) -> tuple[bytes, int, int]:
    """Scale down (never up) to ``spec`` pixels wide and re-encode: no metadata survives."""
    width = min(spec, picture.width)
    height = max(1, round(picture.height * width / picture.width))
    scaled = picture if width == picture.width else picture.resize((width, height), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # Only the colour profile is carried over; EXIF (camera, GPS) and comments are not.
    scaled.save(
        buffer, "JPEG", quality=82, optimize=True, progressive=True, icc_profile=picture.info.get("icc_profile")
    )
    return buffer.getvalue(), width, height


def image_renditions_create(*, image: Image) -> list[Rendition]:
    """Make the renditions the image lacks; those it has are left alone (safe to repeat).

    Raises UndecodableImage when the stored file cannot be read as a picture.
    """
    missing = sorted(set(RENDITION_WIDTHS) - set(image.renditions.values_list("spec", flat=True)))
    if not missing:
        return []
    try:
        with image.file.open("rb") as handle:
            # A JPEG decodes at reduced scale, still at least as large as the widest rendition
            # on its shorter side, so a 24-megapixel photo's thumbnails cost a fraction.
            picture = load_rgb(
                handle, max_pixels=settings.IMAGE_MAX_PIXELS, draft_min_side=max(RENDITION_WIDTHS)
            )
    except FileNotFoundError:
        raise UndecodableImage("The stored file is missing.") from None
    created = []
    for spec in missing:
        content, width, height = _render(picture, spec=spec)
        rendition = Rendition(image=image, spec=spec, width=width, height=height)
        rendition.file.save(f"{spec}.jpg", ContentFile(content), save=False)
        try:
            with transaction.atomic():
                rendition.save()
        except IntegrityError:
            # Another worker made it first, or the image was deleted meanwhile.
            _delete_stored_file(rendition)
            continue
        created.append(rendition)
    return created


def images_renditions_create(*, image_ids: Iterable[int]) -> dict[str, int]:
    """Make missing renditions for these images; a file that cannot be read is logged and skipped."""
    counts = {"created": 0, "failed": 0}
    for image in Image.objects.filter(pk__in=list(image_ids)).order_by("pk"):
        try:
            counts["created"] += len(image_renditions_create(image=image))
        except UndecodableImage as error:
            counts["failed"] += 1
            logger.warning("No renditions for image %s: %s", image.pk, error)
    return counts


def renditions_publish(*, image_ids: Iterable[int]) -> bool:
    """Send rendition tasks now. False when the broker is unreachable (the sweeper retries)."""
    from .tasks import create_renditions

    image_ids = list(image_ids)
    try:
        for start in range(0, len(image_ids), RENDITIONS_PER_TASK):
            create_renditions.delay(image_ids[start : start + RENDITIONS_PER_TASK])
    except Exception:
        logger.warning(
            "Broker unavailable: renditions of %d image(s) wait for the sweeper", len(image_ids), exc_info=True
        )
        return False
    return True


def renditions_sweep() -> int:
    """Queue images that still lack renditions a while after upload (broker outage, lost message).

    Only ready images: their file has decoded once, so the task has a fair chance.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.EMBEDDING_SWEEP_PENDING_AFTER)
    image_ids = list(
        Image.objects.ready()
        .without_renditions()
        .filter(created_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:5_000]
    )
    if image_ids:
        renditions_publish(image_ids=image_ids)
    return len(image_ids)
