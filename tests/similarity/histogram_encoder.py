"""A second model, for tests only: a fixed colour histogram, 8 x 8 x 8 RGB bins = 512 floats.

All a model needs is this one module: a ``FAMILY`` for the registry (listed in
EMBEDDING_ENCODER_MODULES, chosen with EMBEDDING_ENCODER=histogram) and the loader it names.
512 floats fit the vector column ResNet18's vectors use, so it needs no migration; a model of
another dimension would add one for a column or table of its width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from similarity.encoders.base import EncoderFamily
from similarity.preprocessing import INPUT_SIDE, network_pixels

BINS = 8  # per channel
FAMILY = EncoderFamily(
    name="histogram", dimension=BINS**3, load="tests.similarity.histogram_encoder:load", version="rgb-8x8x8"
)


@dataclass
class HistogramEncoder:
    identity: str
    dimension: int = FAMILY.dimension
    threads: int = 1
    on_gpu: bool = False

    # The same 224 x 224 pixels a search photo is prepared to in the web process.
    pixels = staticmethod(network_pixels)

    def embed_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        vectors = np.zeros((len(pixels), self.dimension), dtype=np.float32)
        for row, picture in zip(vectors, pixels):
            bins = picture.reshape(-1, 3).astype(np.int64) * BINS // 256
            row[:] = np.bincount((bins[:, 0] * BINS + bins[:, 1]) * BINS + bins[:, 2], minlength=self.dimension)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed(self, images: Sequence) -> np.ndarray:
        return self.embed_pixels([self.pixels(image) for image in images])

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        self.embed_pixels([np.zeros((INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)])


def load(*, weights: str, seed: int, identity: str, device: str) -> HistogramEncoder:
    """The registry's loader; a histogram has no weights and runs wherever NumPy does."""
    return HistogramEncoder(identity=identity)
