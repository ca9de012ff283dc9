"""Reads for the gallery pages and the admin."""

from collections.abc import Iterable

from django.conf import settings
from django.db.models import Count, prefetch_related_objects
from django.http import Http404
from django.shortcuts import get_object_or_404

from pagecache import store
from similarity import selectors as similarity_selectors
from similarity.selectors import SimilarImage, images_similar_to

from .models import Image, Tag


def image_list(*, tag: Tag | None = None):
    return Image.objects.tagged(tag).newest_first().with_renditions()


def images_prefetch_renditions(*, images: Iterable[Image]) -> None:
    """Load the thumbnails of images already in hand, in one query however many there are."""
    images = [image for image in images if image is not None]
    if images:
        prefetch_related_objects(images, "renditions")


def image_get(*, image_id: int) -> Image:
    """The image, with ``has_embedding`` (a vector from the configured model) in the same query."""
    return get_object_or_404(Image.objects.annotate_has_embedding().prefetch_related("tags"), pk=image_id)


def image_recommendations(
    *, image: Image, k: int | None = None, tag: Tag | None = None, diverse: bool | None = None
) -> list[SimilarImage]:
    """The images to show beside ``image`` (itself excluded), most similar first, thumbnails loaded.

    What the image page and the API's similar-images answer both show. ``k`` defaults to
    RECOMMENDATIONS_K and ``diverse`` to DIVERSITY_DEFAULT. For an image from ``image_get``, which
    knows whether it has a vector yet, one without has no neighbours and costs no query; the
    renditions of the image and its neighbours come in one query however many there are.
    """
    k = settings.RECOMMENDATIONS_K if k is None else k
    diverse = settings.DIVERSITY_DEFAULT if diverse is None else diverse
    if getattr(image, "has_embedding", True):  # not annotated: the neighbour query finds out itself
        similar = images_similar_to(image=image, k=k, tag=tag, diverse=diverse)
    else:
        similar = []
    images_prefetch_renditions(images=[image, *(item.image for item in similar)])
    return similar


def image_get_by_original_name(*, original_name: str) -> Image:
    """The newest image uploaded under that file name (the original app's identifier)."""
    image = Image.objects.filter(original_name=original_name).newest_first().first()
    if image is None:
        raise Http404(f"No image named {original_name!r}.")
    return image


def embedding_status_counts(*, identity: str | None = None) -> dict[str, int]:
    """How many images are pending, processing, ready, failed, and stale (admin summary)."""
    counts = similarity_selectors.embedding_status_counts()
    counts["stale"] = Image.objects.stale(identity).count()
    return counts


def images_load_embedding_jobs(*, images: Iterable[Image]) -> None:
    """Read where the embeddings of images already in hand stand, in one query however many
    there are (``Image.embedding_status`` would ask once per image)."""
    images = [image for image in images if image is not None]
    jobs = similarity_selectors.embedding_jobs_of(image_ids=[image.pk for image in images])
    for image in images:
        image.__dict__["_embedding_job"] = jobs.get(image.pk)


def tag_get(*, slug: str | None) -> Tag | None:
    """The tag a URL names (None for none); an unknown tag is a 404."""
    if not slug:
        return None
    return get_object_or_404(Tag, slug=slug)


def tags_in_use() -> list[Tag]:
    """Tags with at least one image, each with ``image_count``, by name; counted once per cache
    generation (every gallery page shows them)."""
    return store.cached(
        "tags-in-use",
        lambda: list(Tag.objects.annotate(image_count=Count("images")).filter(image_count__gt=0).order_by("name")),
    )
