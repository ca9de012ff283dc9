"""Search by example, the web side: a visitor's picture to the workers, and its neighbours back.

The web process never runs the network: it prepares the picture exactly as a worker prepares
a stored image (the decode is upload validation's, which is the worker's; the resize and crop
are ``preprocessing.network_pixels``, the worker's own), so a gallery image's own file finds
itself first, at a similarity of 1 but for float rounding. Those pixels travel losslessly to the
`searches` queue, which the embedding workers serve ahead of any ingest backlog (a worker of
its own in the Procfile), waits a bounded time for the vector, and asks PostgreSQL for the
nearest images. Nothing is stored: the picture travels in the message, and the vector comes
back through the result backend, which forgets it within minutes.
"""

from __future__ import annotations

import base64
import logging

import numpy as np
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from PIL import Image

from imagerec.celery import app

from .preprocessing import network_pixels
from .selectors import SimilarImage, embeddings_nearest, similarity_from_distance

logger = logging.getLogger(__name__)

QUERY_TASK = "similarity.query_embed"


class SearchUnavailable(Exception):
    """No worker answered in time: busy, or not running. The message says so to the visitor."""


def query_pixels(picture: Image.Image) -> bytes:
    """What travels to the worker: the network's input pixels of the (upright, RGB) picture.

    Raw uint8 RGB, always PIXELS_BYTES (150,528) long whatever the photo's size or shape:
    the message is bounded by the network's input, not by the upload. A lossy re-encoding
    (a JPEG) would move a picture's vector away from its stored twin's.
    """
    return network_pixels(picture).tobytes()


def query_vector(*, pixels: bytes, timeout: float | None = None) -> tuple[str, np.ndarray]:
    """(model identity, vector) of the picture, computed by a worker; SearchUnavailable if none answers."""
    timeout = settings.SEARCH_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        result = app.send_task(
            QUERY_TASK,
            args=[base64.b64encode(pixels).decode("ascii")],
            expires=timeout,  # not worth doing once the visitor's page has given up
            time_limit=None,
            soft_time_limit=None,
        )
    except Exception as error:  # the broker is unreachable
        logger.warning("Search by example could not be sent: %s", error)
        raise SearchUnavailable("The search service cannot be reached right now.") from None
    try:
        answer = result.get(timeout=timeout, interval=0.02)
    except CeleryTimeoutError:
        raise SearchUnavailable("No embedding worker answered in time: they are busy or not running.") from None
    except Exception as error:  # the result backend is unreachable, or the task failed
        logger.warning("Search by example failed: %s", error)
        raise SearchUnavailable("The search service could not compute this picture right now.") from None
    finally:
        try:
            result.forget()
        except Exception:  # noqa: BLE001 (the backend is away: the result expires on its own)
            pass
    return answer["identity"], np.asarray(answer["vector"], dtype=np.float32)


def images_similar_to_picture(*, picture: Image.Image, k: int, tag=None) -> list[SimilarImage]:
    """The k gallery images most like a visitor's (decoded, upright) picture; SearchUnavailable if no worker answers."""
    identity, vector = query_vector(pixels=query_pixels(picture))
    return images_similar_to_vector(vector=vector, identity=identity, k=k, tag=tag)


def images_similar_to_vector(*, vector: np.ndarray, identity: str, k: int, tag=None) -> list[SimilarImage]:
    """The k gallery images nearest to a vector that is not stored: one HNSW query, the pages' own."""
    rows = embeddings_nearest(vector=vector.tolist(), identity=identity, k=k, tag=tag)
    return [SimilarImage(image=row.image, similarity=similarity_from_distance(row.distance)) for row in rows]
