"""Reads for the gallery pages and the admin."""

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, prefetch_related_objects
from django.http import Http404
from django.shortcuts import get_object_or_404

from clicks import selectors as clicks_selectors
from pagecache import store
from similarity import selectors as similarity_selectors
from similarity.selectors import SimilarImage, images_similar_to

from .models import ArchiveUpload, Image, Tag


@dataclass(frozen=True)
class Recommendation:
    """An image in another's list: its similarity (0 to 1) and the list that put it there,
    "visual" (the nearest neighbours) or "hybrid" (re-ranked by what visitors chose)."""

    image: Image
    similarity: float
    variant: str = "visual"


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
    *, image: Image, k: int | None = None, tag: Tag | None = None, diverse: bool | None = None,
    variant: str | None = None,
) -> list[Recommendation]:
    """The images to show beside ``image`` (itself excluded), thumbnails loaded: what the image
    page and the API's similar-images answer both show.

    ``variant``: "visual" (the nearest neighbours, most similar first), "hybrid" (those
    re-ranked by what visitors chose, with images they often chose from this one), or, by
    default, what CLICKS_COMPARISON says: the two interleaved, or one of them per image
    (clicks.selectors). ``k`` defaults to RECOMMENDATIONS_K and ``diverse`` to
    DIVERSITY_DEFAULT. For an image from ``image_get``, which knows whether it has a vector
    yet, one without has no neighbours and costs no query; otherwise the neighbour search
    (often from the cache), the evidence of visitors' choices unless the list is "visual",
    and the renditions of every image shown in one query.
    """
    k = settings.RECOMMENDATIONS_K if k is None else k
    diverse = settings.DIVERSITY_DEFAULT if diverse is None else diverse
    variant = variant or clicks_selectors.variant_default()
    if not getattr(image, "has_embedding", True):  # not annotated: the neighbour query finds out itself
        images_prefetch_renditions(images=[image])
        return []
    wanted = k if variant == "visual" else k * settings.CLICKS_CANDIDATE_FACTOR
    candidates = images_similar_to(image=image, k=wanted, tag=tag, diverse=diverse)
    ranked = clicks_selectors.recommendations_rank(
        source_id=image.pk, visual=[(item.image.pk, item.similarity) for item in candidates], k=k, variant=variant
    )
    by_id = {item.image.pk: item for item in candidates}
    chosen_elsewhere = [image_id for image_id, _ in ranked if image_id not in by_id]
    for item in similarity_selectors.images_similarity_to(image=image, image_ids=chosen_elsewhere, tag=tag):
        by_id[item.image.pk] = item
    shown = [
        Recommendation(image=by_id[image_id].image, similarity=by_id[image_id].similarity, variant=team)
        for image_id, team in ranked
        if image_id in by_id
    ]
    images_prefetch_renditions(images=[image, *(item.image for item in shown)])
    return shown


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


def images_with_sha256(*, hashes: Iterable[str]) -> list[Image]:
    """The gallery's images whose content hash is among these, with what a list shows of each
    (tags, thumbnails, embedding status) in one query per kind, however many there are."""
    images = list(Image.objects.filter(sha256__in=set(hashes)).with_renditions().prefetch_related("tags"))
    images_load_embedding_jobs(images=images)
    return images


def archive_upload_get(*, archive_id: int) -> ArchiveUpload:
    return get_object_or_404(ArchiveUpload, pk=archive_id)
