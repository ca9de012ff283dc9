"""Reads: nearest neighbours by cosine similarity."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet, Subquery
from pgvector.django import CosineDistance

from .models import Embedding
from .weights import model_identity


@dataclass(frozen=True)
class SimilarImage:
    image: object  # a gallery.Image, reached through the embedding's foreign key
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


def neighbours_queryset(*, image_id: int, k: int, identity: str) -> QuerySet:
    """The SQL behind ``images_similar_to``: embeddings nearest to the image's own, in one query.

    The image's vector is read by a subquery that PostgreSQL runs once, and the HNSW index
    orders the rest by cosine distance to it, so the vector never travels to Python and back.
    Each row has ``distance`` and its image joined; the benchmarks measure this very queryset.
    """
    own_vector = Embedding.objects.filter(image_id=image_id, model_identity=identity).values("vector")[:1]
    return (
        Embedding.objects.for_model(identity)
        .exclude(image_id=image_id)
        .annotate(distance=CosineDistance("vector", Subquery(own_vector)))
        .order_by("distance")
        .select_related("image")
        .defer("vector")[:k]
    )


def images_similar_to(*, image, k: int, identity: str | None = None) -> list[SimilarImage]:
    """The k images nearest to ``image`` (itself excluded), most similar first.

    One query whatever k is. An image without a vector from the configured model has no
    neighbours yet: every distance is NULL then, and none is returned.
    """
    rows = neighbours_queryset(image_id=image.pk, k=k, identity=identity or model_identity())
    return [
        SimilarImage(image=row.image, similarity=similarity_from_distance(row.distance))
        for row in rows
        if row.distance is not None
    ]
