"""Reads for the gallery pages."""

from collections.abc import Iterable

from django.db.models import prefetch_related_objects
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
    from similarity.selectors import with_embedding_flag

    return get_object_or_404(with_embedding_flag(Image.objects.all()), pk=image_id)


def image_get_by_original_name(*, original_name: str) -> Image:
    """The newest image uploaded under that file name (the original app's identifier)."""
    image = Image.objects.filter(original_name=original_name).newest_first().first()
    if image is None:
        raise Http404(f"No image named {original_name!r}.")
    return image
