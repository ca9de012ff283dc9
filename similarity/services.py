"""Writes for embeddings: storing the vectors a worker computed."""

from __future__ import annotations

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from .models import Embedding, ServingModel
from .signals import vectors_stored


def _halfvec_literals(vectors) -> list[str]:
    """Each vector as halfvec's text form, ``[v1,...,vn]``, rounded to half precision first.

    Five significant digits tell every half-precision value apart (11 bits of mantissa), so
    PostgreSQL stores exactly what pgvector's own adapter would; one C-level format per vector
    costs 83 us against its 222 us (512 dimensions, one core).
    """
    rows = np.asarray([np.asarray(vector, dtype=np.float32) for vector in vectors]).astype(np.float16)
    if not len(rows):
        return []
    row_format = "[" + ",".join(["%.5g"] * rows.shape[1]) + "]"
    return [row_format % tuple(row) for row in rows.astype(np.float64).tolist()]


def embeddings_store(*, vectors_by_image: dict[int, np.ndarray], identity: str) -> None:
    """Store one vector per image for ``identity``; safe to repeat (a redelivered task).

    Other models' vectors of the same images stay: the site may still serve one of them
    (an upgrade in progress); ``similarity.serving.embeddings_drop`` removes them afterwards.
    Call inside the transaction that marks the images ready.
    """
    now = timezone.now()
    table = connection.ops.quote_name(Embedding._meta.db_table)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # One statement per batch, the vectors as halfvec text made by _halfvec_literals.
            cursor.execute(
                f"""
                INSERT INTO {table} (image_id, model_identity, vector, created_at)
                SELECT batch.image_id, %s, batch.vector::halfvec, %s
                FROM unnest(%s::bigint[], %s::text[]) AS batch(image_id, vector)
                ON CONFLICT (image_id, model_identity)
                DO UPDATE SET vector = EXCLUDED.vector, created_at = EXCLUDED.created_at
                """,
                [identity, now, list(vectors_by_image), _halfvec_literals(vectors_by_image.values())],
            )
        if not ServingModel.objects.exists():
            # The first vectors pin the model the site serves, so changing EMBEDDING_WEIGHTS
            # later starts an upgrade instead of taking every image's neighbours away.
            ServingModel.objects.bulk_create([ServingModel(identity=identity)], ignore_conflicts=True)
        # A new vector can be any image's nearest neighbour (gallery.invalidation).
        vectors_stored.send(sender=embeddings_store, image_ids=list(vectors_by_image), identity=identity)
