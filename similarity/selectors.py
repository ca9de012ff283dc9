"""Reads: nearest neighbours by cosine similarity, optionally within a tag and diversified; and
where each image's embedding stands (its status), for the gallery's pages, admin and counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from pgvector.django import CosineDistance

from . import cache
from .models import Embedding, EmbeddingJob
from .serving import serving_identity_expression
from .weights import WeightsUnavailable, model_identity


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


def embeddings_nearest(
    *, vector, identity, k: int, tag=None, exclude_image_id: int | None = None, with_vectors: bool = False
) -> QuerySet:
    """The k embeddings of model ``identity`` nearest to ``vector``, nearest first, in one query.

    ``vector`` is a list of floats (a picture that is not stored) or an expression PostgreSQL
    evaluates in the same statement (a stored image's own vector); ``identity`` likewise. The
    HNSW index orders the rows by cosine distance to it. Within a tag the index scan goes on
    until k rows pass the filter (``hnsw.iterative_scan``, set per connection), or the planner
    reads the tag's rows and sorts them, whichever costs less. Each row has ``distance`` and its
    image joined; the vector itself is left in the database unless ``with_vectors``.
    """
    rows = Embedding.objects.for_model(identity)
    if exclude_image_id is not None:
        rows = rows.exclude(image_id=exclude_image_id)
    if tag is not None:
        rows = rows.filter(image__tags=tag)
    rows = rows.annotate(distance=CosineDistance("vector", vector)).order_by("distance").select_related("image")
    return (rows if with_vectors else rows.defer("vector"))[:k]


def neighbours_queryset(*, image_id: int, k: int, identity=None, tag=None, with_vectors: bool = False) -> QuerySet:
    """The SQL behind ``images_similar_to``: embeddings nearest to the image's own, itself excluded.

    The image's vector is read by a subquery that PostgreSQL runs once, so it never travels to
    Python and back; the benchmarks measure this queryset. ``identity`` defaults to the serving
    model's, read inside the same statement.
    """
    identity = serving_identity_expression() if identity is None else identity
    own_vector = Embedding.objects.filter(image_id=image_id, model_identity=identity).values("vector")[:1]
    return embeddings_nearest(
        vector=Subquery(own_vector), identity=identity, k=k, tag=tag, exclude_image_id=image_id,
        with_vectors=with_vectors,
    )


def nearest_neighbours_of(*, image_ids, identity: str) -> dict[int, tuple[int, float]]:
    """Each image's nearest other image by model ``identity``: ``{image_id: (neighbour_id, similarity)}``.

    One statement for the whole batch, whatever its size: the worker calls this per batch, and
    a query built and compiled per image cost about 1.35 ms each, with Redis round trips and the SQL a cap near 500-900 images/s on a
    GPU worker. The inner query's ``ORDER BY vector <=> outer vector LIMIT 1`` is the HNSW
    index's own expression, so each image's lookup is an index scan (``hnsw.ef_search`` and
    the iterative scan as every connection sets them). Images without a vector from
    ``identity``, and an image with nothing to compare with, are left out.
    """
    table = connection.ops.quote_name(Embedding._meta.db_table)
    sql = f"""
        SELECT own.image_id, nearest.image_id, nearest.distance
        FROM {table} own
        CROSS JOIN LATERAL (
            SELECT other.image_id, other.vector <=> own.vector AS distance
            FROM {table} other
            WHERE other.model_identity = %s AND other.image_id <> own.image_id
            ORDER BY other.vector <=> own.vector
            LIMIT 1
        ) nearest
        WHERE own.model_identity = %s AND own.image_id = ANY(%s::bigint[])
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [identity, identity, list(image_ids)])
        rows = cursor.fetchall()
    return {image_id: (neighbour_id, similarity_from_distance(distance)) for image_id, neighbour_id, distance in rows}


def maximal_marginal_relevance(relevance: np.ndarray, vectors: np.ndarray, k: int, weight: float) -> list[int]:
    """Indexes of ``k`` candidates chosen for relevance and for being unlike those already chosen.

    Each step takes the candidate maximising ``weight * relevance - (1 - weight) * (its highest
    similarity to one already chosen)`` (Carbonell and Goldstein, 1998): weight 1 is the plain
    ranking, lower weights spread the list over more kinds of picture. Rows of ``vectors`` are
    unit length, so their dot products are cosines.
    """
    between = vectors @ vectors.T
    chosen: list[int] = []
    redundancy = np.zeros(len(relevance), dtype=np.float32)
    for _ in range(min(k, len(relevance))):
        score = weight * relevance - (1 - weight) * redundancy if chosen else relevance.astype(np.float32)
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        redundancy = np.maximum(redundancy, between[best])
    return chosen


def _neighbours(*, image_id: int, k: int, identity: str, tag, diverse: bool) -> list:
    """Rows nearest first (plain), or the MMR choice among k x DIVERSITY_CANDIDATES of them."""
    if not diverse:
        rows = neighbours_queryset(image_id=image_id, k=k, identity=identity, tag=tag)
        # The iterative scan (relaxed_order) may return a filtered list slightly out of order:
        # bench/churn.py found a third of tag lists so at 100,000 images. Sorting the k rows
        # here is what pgvector's documentation advises, at no measurable cost.
        return sorted((row for row in rows if row.distance is not None), key=lambda row: row.distance)
    candidates = neighbours_queryset(
        image_id=image_id, k=k * settings.DIVERSITY_CANDIDATES, identity=identity, tag=tag, with_vectors=True
    )
    candidates = [row for row in candidates if row.distance is not None]
    if not candidates:
        return []
    vectors = np.asarray([np.asarray(row.vector, dtype=np.float32) for row in candidates])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = np.asarray([1.0 - float(row.distance) for row in candidates], dtype=np.float32)
    return [candidates[index] for index in maximal_marginal_relevance(relevance, vectors, k, settings.DIVERSITY_WEIGHT)]


def images_similar_to(
    *, image, k: int, identity: str | None = None, tag=None, diverse: bool = False
) -> list[SimilarImage]:
    """The k images nearest to ``image`` (itself excluded), most similar first.

    ``tag`` keeps to images with that tag; ``diverse`` re-ranks a larger candidate set with
    maximal marginal relevance (DIVERSITY_WEIGHT). One query whatever k is, whether the list
    comes from the cache (the images are loaded) or is computed (they come with it). An image
    without a vector from the configured model has no neighbours yet: every distance is NULL
    then, and none is returned.
    """
    loaded = {}

    def compute() -> list[tuple[int, float]]:
        rows = _neighbours(image_id=image.pk, k=k, identity=identity, tag=tag, diverse=diverse)
        loaded.update((row.image_id, row.image) for row in rows)
        return [(row.image_id, similarity_from_distance(row.distance)) for row in rows]

    mix = f"{settings.DIVERSITY_WEIGHT}x{settings.DIVERSITY_CANDIDATES}" if diverse else "plain"
    # Switching the serving model bumps the cache's generation, so "serving" is a safe key.
    key = f"{identity or 'serving'}:{image.pk}:{k}:{tag.pk if tag is not None else ''}:{mix}"
    ranked = cache.cached(key, compute)
    missing = [image_id for image_id, _ in ranked if image_id not in loaded]
    if missing:
        rows = Embedding.objects.filter(image_id__in=missing).distinct("image_id").order_by("image_id")
        loaded.update((row.image_id, row.image) for row in rows.select_related("image").defer("vector"))
    # An image deleted since the list was cached drops out (its deletion also invalidates the list).
    return [SimilarImage(image=loaded[image_id], similarity=score) for image_id, score in ranked if image_id in loaded]


def images_similarity_to(
    *, image, image_ids: list[int], identity: str | None = None, tag=None
) -> list[SimilarImage]:
    """Those images, with their similarity to ``image`` (by the serving model unless
    ``identity``), in the order given; one query. For images a list holds without the visual
    search having found them (visitors chose them): what their score is. Images without a
    vector from that model, gone, or without ``tag`` when one is given, are left out."""
    if not image_ids:
        return []
    identity = serving_identity_expression() if identity is None else identity
    own_vector = Embedding.objects.filter(image_id=image.pk, model_identity=identity).values("vector")[:1]
    rows = (
        Embedding.objects.for_model(identity)
        .filter(image_id__in=image_ids, **({"image__tags": tag} if tag is not None else {}))
        .annotate(distance=CosineDistance("vector", Subquery(own_vector)))
        .select_related("image")
        .defer("vector")
    )
    by_id = {row.image_id: row for row in rows if row.distance is not None}
    return [
        SimilarImage(image=by_id[image_id].image, similarity=similarity_from_distance(by_id[image_id].distance))
        for image_id in image_ids
        if image_id in by_id
    ]


# --- Embedding status -------------------------------------------------------------------
#
# An image's status is its row for the configured model (what the workers embed with), or,
# while it has none (the weights just changed: an upgrade not yet started), its latest row of
# another model. So a ready image stays ready until ``embed_images`` asks for the next
# model's vector, and its progress is then the next model's.


def _status_rows() -> tuple[QuerySet, QuerySet]:
    """The configured model's rows, and each other image's latest row of another model."""
    try:
        own = EmbeddingJob.objects.for_model(model_identity())
    except WeightsUnavailable:
        own = EmbeddingJob.objects.none()  # a weights file this host cannot read
    latest = (
        EmbeddingJob.objects.exclude(image_id__in=own.values("image_id"))
        .order_by("image_id", "-status_changed_at", "-pk")
        .distinct("image_id")
    )
    return own, EmbeddingJob.objects.filter(pk__in=latest.values("pk"))


def embedding_status_filter(status: str) -> Q:
    """A filter on images (by ``pk``): those whose embedding is in ``status``."""
    own, fallback = _status_rows()
    return Q(pk__in=own.filter(status=status).values("image_id")) | Q(
        pk__in=fallback.filter(status=status).values("image_id")
    )


def embedding_status_expression():
    """An image's status as SQL, for a queryset of images (``OuterRef("pk")``): to sort by it."""
    rows = EmbeddingJob.objects.filter(image_id=OuterRef("pk"))
    try:
        own = rows.filter(model_identity=model_identity())
    except WeightsUnavailable:
        own = rows.none()
    latest = rows.order_by("-status_changed_at", "-pk")
    return Coalesce(Subquery(own.values("status")[:1]), Subquery(latest.values("status")[:1]))


def embedding_jobs_of(*, image_ids) -> dict[int, EmbeddingJob]:
    """The row each image's status is read from (status, error, attempts), by image id; one query."""
    try:
        configured = model_identity()
    except WeightsUnavailable:
        configured = None  # a weights file this host cannot read
    own, latest = {}, {}
    for job in EmbeddingJob.objects.filter(image_id__in=list(image_ids)).order_by("status_changed_at", "pk"):
        (own if job.model_identity == configured else latest)[job.image_id] = job
    return {**latest, **own}


def embedding_status_counts() -> dict[str, int]:
    """How many images are pending, processing, ready and failed, in two queries."""
    counts = dict.fromkeys(EmbeddingJob.Status.values, 0)
    for rows in _status_rows():
        for row in rows.order_by().values("status").annotate(total=Count("pk")):
            counts[row["status"]] += row["total"]
    return counts


def image_ids_to_embed(*, identity: str, which: str) -> list[int]:
    """Ids of the images ``embed_images`` works on, for model ``identity``, in id order.

    ``which``: "all"; "missing" (no vector from ``identity``, failed ones included); "stale"
    (ready, but its vector is another model's).
    """
    # The images' model, reached through the foreign key: this app never imports the gallery.
    images = EmbeddingJob._meta.get_field("image").related_model._default_manager.all()
    if which == "stale":
        images = images.filter(embedding_status_filter(EmbeddingJob.Status.READY))
    if which in ("stale", "missing"):
        images = images.exclude(pk__in=Embedding.objects.for_model(identity).values("image_id"))
    return list(images.order_by("pk").values_list("pk", flat=True))
