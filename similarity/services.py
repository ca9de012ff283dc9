"""Writes for embeddings: storing the vectors a worker computed."""

from __future__ import annotations

import numpy as np
from django.db import transaction
from django.utils import timezone

from .cache import neighbours_cache_invalidate
from .models import Embedding, ServingModel


def embeddings_store(*, vectors_by_image: dict[int, np.ndarray], identity: str) -> None:
    """Store one vector per image for ``identity``; safe to repeat (a redelivered task).

    Other models' vectors of the same images stay: the site may still serve one of them
    (an upgrade in progress); ``similarity.serving.embeddings_drop`` removes them afterwards.
    Call inside the transaction that marks the images ready.
    """
    now = timezone.now()
    with transaction.atomic():
        Embedding.objects.bulk_create(
            [
                Embedding(image_id=image_id, model_identity=identity, vector=vector, created_at=now)
                for image_id, vector in vectors_by_image.items()
            ],
            update_conflicts=True,
            unique_fields=["image", "model_identity"],
            update_fields=["vector", "created_at"],
        )
        if not ServingModel.objects.exists():
            # The first vectors pin the model the site serves, so changing EMBEDDING_WEIGHTS
            # later starts an upgrade instead of taking every image's neighbours away.
            ServingModel.objects.bulk_create([ServingModel(identity=identity)], ignore_conflicts=True)
        # A new vector can be any image's nearest neighbour.
        neighbours_cache_invalidate()
