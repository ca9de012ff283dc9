"""Reads: nearest neighbours and embedding state."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef
from pgvector.django import CosineDistance

from gallery.models import Image

from .identity import model_identity
from .models import Embedding


@dataclass(frozen=True)
class SimilarImage:
    image: Image
    similarity: float

    @property
    def percent(self) -> int:
        return round(self.similarity * 100)


def similarity_from_distance(distance: float) -> float:
    """Cosine distance (0..2) to a similarity from 0 (unlike) to 1 (the same).

    ResNet features come after a ReLU, so their cosine is never negative in practice;
    clamping keeps the promise of 0..1 for any vector.
    """
    return min(1.0, max(0.0, 1.0 - float(distance)))


def embedding_for(*, image: Image, identity: str | None = None):
    """The image's vector from the configured model, or None when it has none yet."""
    identity = identity or model_identity()
    return (
        Embedding.objects.filter(image=image, model_identity=identity).values_list("vector", flat=True).first()
    )


def images_similar_to(
    *, image: Image, k: int, identity: str | None = None, vector=None
) -> list[SimilarImage]:
    """The k images nearest to ``image`` (itself excluded), most similar first.

    Two queries whatever k is (one when the caller passes the image's ``vector``): the
    vector, then an HNSW index scan that joins the images. An image without a vector from the configured model has no neighbours yet.
    """
    identity = identity or model_identity()
    if vector is None:
        vector = embedding_for(image=image, identity=identity)
    if vector is None:
        return []
    neighbours = (
        Embedding.objects.for_model(identity)
        .exclude(image_id=image.pk)
        .annotate(distance=CosineDistance("vector", vector))
        .order_by("distance")
        .select_related("image")
        .defer("vector")[:k]
    )
    return [SimilarImage(image=row.image, similarity=similarity_from_distance(row.distance)) for row in neighbours]


def images_stale_for(*, identity: str | None = None):
    """Ready images without a vector from the model configured now."""
    identity = identity or model_identity()
    return Image.objects.ready().filter(
        ~Exists(Embedding.objects.filter(image=OuterRef("pk"), model_identity=identity))
    )


def embedding_status_counts(*, identity: str | None = None) -> dict[str, int]:
    """How many images are pending, processing, ready, failed, and stale (admin summary)."""
    from django.db.models import Count

    counts = {status: 0 for status in Image.Status.values}
    for row in Image.objects.order_by().values("embedding_status").annotate(total=Count("pk")):
        counts[row["embedding_status"]] = row["total"]
    counts["stale"] = images_stale_for(identity=identity).count()
    return counts
