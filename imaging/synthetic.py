"""Deterministic photo-like pictures, to make test and demo images and to calibrate networks."""

from __future__ import annotations

import numpy as np
from PIL import Image


def synthetic_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic picture with photo-like structure: smooth colour fields, shapes, grain.

    Different seeds give clearly different pictures; the same seed always the same one.
    Used to calibrate randomly initialised networks and to make test images.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.zeros((height, width, 3), dtype=np.float32)
    for channel in range(3):
        fx, fy = rng.uniform(0.5, 4.0, size=2) * 2 * np.pi
        phase = rng.uniform(0, 2 * np.pi)
        picture[..., channel] = 127 + 100 * np.sin(fx * x / width + fy * y / height + phase)
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.3) * min(width, height)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < radius**2
        picture[mask] = rng.uniform(0, 255, size=3)
    picture += rng.normal(0, 6, size=picture.shape)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")
