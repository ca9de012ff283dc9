"""Celery tasks of the vector engine: ids or data in, one call, the retry and time-limit policy."""

import base64

from celery import shared_task

from . import compute


@shared_task(
    name="similarity.query_embed",
    # The visitor's page waits for this result (the one task whose result is kept).
    ignore_result=False,
    # A search is one small picture: if it takes longer, the page has long given up.
    soft_time_limit=20,
    time_limit=30,
)
def query_embed(picture: str) -> dict:
    """The vector of a visitor's picture (base64 JPEG), and the model that made it."""
    identity, vector = compute.embedding_of_picture(base64.b64decode(picture))
    return {"identity": identity, "vector": [float(value) for value in vector]}
