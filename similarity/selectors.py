"""Reads: nearest neighbours and embedding state."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Subquery
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


def with_embedding_flag(queryset, *, identity: str | None = None):
    """Annotate ``has_embedding``: whether each image has a vector from the configured model."""
    identity = identity or model_identity()
    return queryset.annotate(
        has_embedding=Exists(Embedding.objects.filter(image=OuterRef("pk"), model_identity=identity))
    )


def images_similar_to(*, image: Image, k: int, identity: str | None = None) -> list[SimilarImage]:
    """The k images nearest to ``image`` (itself excluded), most similar first.

    One query whatever k is: the image's own vector is read by a subquery that PostgreSQL
    runs once, and the HNSW index orders the rest by cosine distance to it. The vector never
    travels to Python and back. An image without a vector from the configured model has no
    neighbours yet.
    """
    identity = identity or model_identity()
    own_vector = Embedding.objects.filter(image_id=image.pk, model_identity=identity).values("vector")[:1]
    neighbours = (
        Embedding.objects.for_model(identity)
        .exclude(image_id=image.pk)
        .annotate(distance=CosineDistance("vector", Subquery(own_vector)))
        .order_by("distance")
        .select_related("image")
        .defer("vector")[:k]
    )
    # Without a vector of its own every distance is NULL: no neighbours, not k arbitrary ones.
    return [
        SimilarImage(image=row.image, similarity=similarity_from_distance(row.distance))
        for row in neighbours
        if row.distance is not None
    ]


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
