"""Reads for the gallery pages and the admin."""

from collections.abc import Iterable

from django.db.models import Count, prefetch_related_objects
from django.http import Http404
from django.shortcuts import get_object_or_404

from .models import Image


def image_list():
    return Image.objects.newest_first().with_renditions()


def images_prefetch_renditions(*, images: Iterable[Image]) -> None:
    """Load the thumbnails of images already in hand, in one query however many there are."""
    images = [image for image in images if image is not None]
    if images:
        prefetch_related_objects(images, "renditions")


def image_get(*, image_id: int) -> Image:
    """The image, with ``has_embedding`` (a vector from the configured model) in the same query."""
    return get_object_or_404(Image.objects.annotate_has_embedding(), pk=image_id)


def image_get_by_original_name(*, original_name: str) -> Image:
    """The newest image uploaded under that file name (the original app's identifier)."""
    image = Image.objects.filter(original_name=original_name).newest_first().first()
    if image is None:
        raise Http404(f"No image named {original_name!r}.")
    return image


def images_count_by_status() -> dict[str, int]:
    """How many images are pending, processing, ready and failed, in one query."""
    counts = dict.fromkeys(Image.Status.values, 0)
    for row in Image.objects.order_by().values("embedding_status").annotate(total=Count("pk")):
        counts[row["embedding_status"]] = row["total"]
    return counts


def embedding_status_counts(*, identity: str | None = None) -> dict[str, int]:
    """How many images are pending, processing, ready, failed, and stale (admin summary)."""
    counts = images_count_by_status()
    counts["stale"] = Image.objects.stale(identity).count()
    return counts
