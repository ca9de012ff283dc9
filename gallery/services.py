"""Writes to the gallery: adding and removing images."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from similarity.services import embeddings_enqueue

from .models import Image
from .validation import clean_original_name, inspect_image

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


def image_create(*, upload, caption: str = "", uploaded_by=None, enqueue: bool = True) -> Image:
    """Validate and store one uploaded image, then queue its embedding once committed.

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
                embeddings_enqueue(image_ids=[image.pk])
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


def images_create(*, uploads, caption: str = "", uploaded_by=None) -> list[UploadOutcome]:
    """Add many files; each succeeds or fails on its own. Embeddings are queued in batches."""
    outcomes = []
    for upload in uploads:
        name = clean_original_name(upload.name)
        try:
            image = image_create(upload=upload, caption=caption, uploaded_by=uploaded_by, enqueue=False)
        except ValidationError as error:
            outcomes.append(UploadOutcome(name=name, error=" ".join(error.messages)))
        except DuplicateImageError as error:
            outcomes.append(UploadOutcome(name=name, duplicate_of=error.existing))
        else:
            outcomes.append(UploadOutcome(name=name, image=image))
    added = [outcome.image.pk for outcome in outcomes if outcome.image is not None]
    if added:
        embeddings_enqueue(image_ids=added)
    return outcomes


def _delete_stored_file(image: Image) -> None:
    if image.file and image.file.name:
        try:
            image.file.storage.delete(image.file.name)
        except OSError:
            logger.warning("Could not remove %s after a failed upload", image.file.name, exc_info=True)
