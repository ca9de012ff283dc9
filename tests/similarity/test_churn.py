"""Lists stay right as the collection churns: a tenth of the images deleted, then VACUUM, then
the HNSW index rebuilt with REINDEX CONCURRENTLY, and every list still holds its k nearest.

A few thousand images with vectors shaped like the network's (non-negative, clustered, unit
length), stored by the worker's own writer; deletions through the ORM, as the admin's delete
action makes them. Lists are read through the site's selectors over the site's connection
options (``hnsw.ef_search``, ``hnsw.iterative_scan``), and compared with exact search in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from django.db import connection

from gallery.models import Image, Tag
from gallery.selectors import image_recommendations
from similarity.models import Embedding
from similarity.selectors import neighbours_queryset
from similarity.services import embeddings_store
from similarity.weights import model_identity

# Maintenance statements run outside a transaction, as an operator runs them.
pytestmark = pytest.mark.django_db(transaction=True)

IMAGES = 2000
K = 10
QUERIES = 100
RECALL = 0.95


@dataclass
class Collection:
    vectors: dict[int, np.ndarray]  # by image id, as stored (rounded to half precision)
    tags: dict[str, Tag]
    members: dict[str, set[int]]  # image ids by tag slug


def clustered_vectors(count: int, seed: int = 18) -> np.ndarray:
    """Non-negative, unit length, in clusters of uneven size: neighbours near cosine 0.8 to 0.9
    and unrelated pictures near 0.4, as with the network's features."""
    rng = np.random.default_rng(seed)
    dimensions = Embedding._meta.get_field("vector").dimensions
    scale = rng.lognormal(0.0, 0.5, dimensions)
    centres = rng.gamma(0.6, 1.0, (40, dimensions)) * scale
    weights = 1.0 / np.arange(1, 41) ** 0.7
    members = rng.choice(len(centres), count, p=weights / weights.sum())
    vectors = np.maximum(0.0, centres[members] + rng.standard_normal((count, dimensions)) * 0.5 * scale)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def collection(transactional_db) -> Collection:
    images = Image.objects.bulk_create(
        Image(file=f"images/churn/{i}.jpg", original_name=f"photo-{i}.jpg", format="JPEG", width=64, height=48,
              file_size=1000, sha256=f"{i:064x}")
        for i in range(IMAGES)
    )
    ids = [image.pk for image in images]
    vectors = dict(zip(ids, clustered_vectors(IMAGES)))
    embeddings_store(vectors_by_image=vectors, identity=model_identity())
    # A tag on a fifth of the images and one on a fiftieth, drawn at random: the members of each
    # are spread over the whole graph, the hard case for a filtered scan.
    rng = np.random.default_rng(7)
    tags, members = {}, {}
    for slug, share in (("common", 0.2), ("rare", 0.02)):
        tags[slug] = Tag.objects.create(name=slug.title(), slug=slug)
        members[slug] = set(rng.choice(ids, int(IMAGES * share), replace=False).tolist())
        tags[slug].images.add(*members[slug])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    stored = {image_id: vector.astype(np.float16).astype(np.float32) for image_id, vector in vectors.items()}
    return Collection(vectors=stored, tags=tags, members=members)


@pytest.fixture
def index_scans_preferred(transactional_db):
    """The plans a large collection gets: at a few thousand rows PostgreSQL would rather read the
    table and sort it, which leaves the HNSW index out of the test. The connection's own options
    (ef_search, iterative scan) stay the site's."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_sort = off")
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_sort")


def exact_neighbours(collection: Collection, image_id: int, among: set[int]) -> list[int]:
    """The k images of ``among`` nearest to ``image_id`` by cosine, itself excluded."""
    candidates = np.array(sorted(among - {image_id}))
    matrix = np.stack([collection.vectors[i] for i in candidates])
    similarities = matrix @ collection.vectors[image_id]
    return candidates[np.argsort(-similarities, kind="stable")[:K]].tolist()


def uses_hnsw_index(image_id: int, tag) -> bool:
    sql, params = neighbours_queryset(image_id=image_id, k=K, tag=tag).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return any("similarity_embedding_hnsw" in row[0] for row in cursor.fetchall())


def lists_checked(collection: Collection, query_ids: dict, read) -> dict:
    """Recall@K against exact search and the lists that came back short, per list kind.

    ``read(image_id, tag)`` returns the neighbour ids the site shows; a list is short when it
    holds fewer than K though at least K other images (of the tag) have vectors.
    """
    alive = set(Embedding.objects.values_list("image_id", flat=True))
    assert alive <= set(collection.vectors)
    outcome = {}
    for kind, ids in query_ids.items():
        tag = collection.tags.get(kind)
        among = alive & collection.members[kind] if tag else alive
        hits = possible = 0
        short = []
        for image_id in ids:
            found = read(image_id, tag)
            truth = exact_neighbours(collection, image_id, among)
            assert set(found) <= among - {image_id}, f"{kind}: a deleted, untagged or the same image listed"
            hits += len(set(found) & set(truth))
            possible += len(truth)
            if len(found) < len(truth):
                short.append(image_id)
        outcome[kind] = {"recall": round(hits / possible, 4), "short": short}
    return outcome


def from_selector(image_id: int, tag) -> list[int]:
    """What a page computes when the list is not cached: the selector's queryset, uncached."""
    return [row.image_id for row in neighbours_queryset(image_id=image_id, k=K, tag=tag)]


def from_pages(image_id: int, tag) -> list[int]:
    """What the image page and the API show, through the recommendation cache."""
    image = Image.objects.get(pk=image_id)
    return [item.image.pk for item in image_recommendations(image=image, k=K, tag=tag, diverse=False)]


def test_lists_stay_full_and_right_after_deletions_vacuum_and_reindex(collection, index_scans_preferred):
    rng = np.random.default_rng(11)
    ids = sorted(collection.vectors)
    doomed = set(rng.choice(ids, len(ids) // 10, replace=False).tolist())
    survivors = [i for i in ids if i not in doomed]
    query_ids = {"plain": rng.choice(survivors, QUERIES, replace=False).tolist()}
    for slug, members in collection.members.items():
        query_ids[slug] = sorted(members - doomed)[:QUERIES]
    # Some of what is deleted is a neighbour in the lists read (and cached) before.
    assert any(set(exact_neighbours(collection, i, set(ids))) & doomed for i in query_ids["plain"])
    for kind, ids_of_kind in query_ids.items():
        assert uses_hnsw_index(ids_of_kind[0], collection.tags.get(kind)), f"{kind}: no HNSW index scan"

    stages = {"before": lists_checked(collection, query_ids, from_pages)}

    deleted, _ = Image.objects.filter(pk__in=doomed).delete()
    assert deleted and not Embedding.objects.filter(image_id__in=doomed).exists()
    # The pages' lists after the deletion: those cached before it must not be served.
    stages["deleted, pages"] = lists_checked(collection, query_ids, from_pages)
    stages["deleted"] = lists_checked(collection, query_ids, from_selector)

    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {Embedding._meta.db_table}")
    stages["vacuumed"] = lists_checked(collection, query_ids, from_selector)

    with connection.cursor() as cursor:
        cursor.execute("REINDEX INDEX CONCURRENTLY similarity_embedding_hnsw")
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'similarity_embedding_hnsw'::regclass")
        assert cursor.fetchone() == (True,)
    for kind, ids_of_kind in query_ids.items():
        assert uses_hnsw_index(ids_of_kind[0], collection.tags.get(kind)), f"{kind}: no HNSW scan after REINDEX"
    stages["reindexed"] = lists_checked(collection, query_ids, from_selector)

    failures = [
        f"{stage} {kind}: recall@{K} {result['recall']}, {len(result['short'])} short lists"
        for stage, outcome in stages.items()
        for kind, result in outcome.items()
        if result["recall"] < RECALL or result["short"]
    ]
    assert not failures, failures
