"""Celery tasks of the vector engine: ids or data in, one call, the retry and time-limit policy."""

import base64

from celery import shared_task

from . import compute


@shared_task(
    name="similarity.query_embed",
    # The visitor's page waits for this result (the one task whose result is kept).
    ignore_result=False,
    # A search is one picture's network pixels: if it takes longer, the page has long given up.
    soft_time_limit=20,
    time_limit=30,
)
def query_embed(pixels: str) -> dict:
    """The vector of a visitor's picture (base64 of its network pixels, see search.query_pixels), and the model."""
    identity, vector = compute.embedding_of_picture(base64.b64decode(pixels))
    return {"identity": identity, "vector": [float(value) for value in vector]}
