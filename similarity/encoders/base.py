"""What every encoder is: a model identity, a dimension, preprocessing and a batch forward.

Torch-free, like the registry: web processes name the configured model (the identity stored
beside each vector) without loading any network. An encoder's own module, which may import
torch, is imported only where vectors are computed (the worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from django.conf import settings

from imagerec.cpus import cpu_share


class WeightsUnavailable(RuntimeError):
    """The configured model cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class EncoderFamily:
    """A model the registry can load, described without loading it.

    ``load`` names the function ("module:function") that builds a loaded ``Encoder``; its module
    is imported only then, so a network's imports (torch) stay out of the processes that only
    need the identity. A family with ``weights_file`` takes its weights from EMBEDDING_WEIGHTS
    and its identity is ``<name>/<weights>``; one without has a fixed ``version`` instead.
    """

    name: str  # the registry's key (EMBEDDING_ENCODER), and the first part of its identities
    dimension: int  # floats per vector: the vector column must be this wide
    load: str
    weights_file: str = ""  # torchvision's checkpoint for EMBEDDING_WEIGHTS=imagenet
    version: str = ""  # the identity's second part when there are no weights to name

    @property
    def uses_weights(self) -> bool:
        return bool(self.weights_file)


@runtime_checkable
class Encoder(Protocol):
    """A loaded model, as the worker's pipeline (``similarity.compute``) uses it.

    ``pixels`` prepares one picture on a decode thread (Pillow and NumPy only, so those
    threads start no thread pools of their own); ``embed_pixels`` runs a batch of them through
    the model. Vectors are float32, ``dimension`` wide and of unit length. A search photo is
    prepared by the web process with ``similarity.preprocessing.network_pixels``, so an encoder's
    ``pixels`` returns that shape (``PIXELS_SHAPE``). An encoder ``on_gpu`` also offers
    ``prepare_jpegs`` and ``embed_prepared`` (``similarity.encoders.gpu``).
    """

    identity: str
    dimension: int
    threads: int  # the decode threads the pipeline may run beside this encoder
    on_gpu: bool

    def pixels(self, image) -> np.ndarray: ...

    def embed_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray: ...

    def embed(self, images: Sequence) -> np.ndarray: ...

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None: ...


# How many worker processes split this machine's CPUs; the Celery hooks set it from the
# worker's --concurrency before the encoder loads.
pool_processes = 1


def torch_threads() -> int:
    """EMBEDDING_TORCH_THREADS, or this process's share of the CPUs (the network's and the decoders')."""
    return settings.EMBEDDING_TORCH_THREADS or max(1, cpu_share() // max(1, pool_processes))
