"""The simulator's world: pictures in hidden categories, which the site never sees.

A category is a motif: a few shapes at fixed places and sizes over a striped ground at a
fixed angle and frequency. Each picture draws its category's motif with colours of its own,
moves every shape a little, adds shapes that belong to no category and grain. ``clutter``
sets how much of a picture is its own rather than its category's, the one knob that tunes how
often the demo model's (random weights) nearest neighbours share a category; ``WORLD_CLUTTER``
is the value that puts its precision@10 at 0.3-0.4 (docs/benchmarks.md reports the measure).

Deterministic: picture ``index`` of a world of ``categories`` is the same on every machine.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

SIZE = (192, 144)
WORLD_SEED = 19
# Tuned (bench/simulator.py --tune) for precision@10 0.3-0.4 with the demo model.
WORLD_CLUTTER = 0.38


def category_of(index: int, *, categories: int) -> int:
    """Pictures are dealt to categories in turn, so every category has its share at any size."""
    return index % categories


class Motif:
    """What the pictures of one category share."""

    def __init__(self, category: int):
        rng = np.random.default_rng([WORLD_SEED, category])
        self.angle = rng.uniform(0, np.pi)
        self.frequency = rng.uniform(2, 9)
        self.ground = rng.uniform(0, 255, (2, 3))
        self.shapes = [
            (rng.choice(["ellipse", "rectangle", "triangle"]), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9),
             rng.uniform(0.12, 0.3), rng.uniform(0, 255, 3))
            for _ in range(int(rng.integers(3, 6)))
        ]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, radius: float, colour) -> None:
    width, height = SIZE
    x, y, r = cx * width, cy * height, radius * min(width, height)
    if kind == "ellipse":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif kind == "rectangle":
        draw.rectangle((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=colour)
    else:
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour)


def _colour(rng: np.random.Generator, motif_colour: np.ndarray, clutter: float) -> np.ndarray:
    """The motif's colour moved towards one of the picture's own, as far as ``clutter`` says."""
    return (1 - clutter) * motif_colour + clutter * rng.uniform(0, 255, 3)


def picture(index: int, *, categories: int, clutter: float = WORLD_CLUTTER) -> Image.Image:
    """Picture ``index``: its category's motif under its own colours, jitter, clutter and grain."""
    motif = Motif(category_of(index, categories=categories))
    rng = np.random.default_rng([WORLD_SEED, categories, index])
    width, height = SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # The category's stripes, in two colours of the picture's own; the clutter mixes in
    # stripes at an angle and frequency of its own.
    phase = rng.uniform(0, 2 * np.pi)
    along = (x * np.cos(motif.angle) + y * np.sin(motif.angle)) / width
    stripes = np.sin(2 * np.pi * motif.frequency * along + phase)
    own_angle, own_frequency = rng.uniform(0, np.pi), rng.uniform(2, 9)
    own = np.sin(2 * np.pi * own_frequency * (x * np.cos(own_angle) + y * np.sin(own_angle)) / width)
    pattern = (1 - clutter) * stripes + clutter * own
    low, high = (_colour(rng, motif_colour, clutter) for motif_colour in motif.ground)
    ground = low + (high - low) * ((pattern[..., None] + 1) / 2)
    canvas = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    jitter = 0.03 + 0.15 * clutter
    for kind, cx, cy, radius, motif_colour in motif.shapes:
        colour = tuple(int(c) for c in _colour(rng, motif_colour, clutter))
        _draw_shape(draw, kind, cx + rng.normal(0, jitter), cy + rng.normal(0, jitter),
                    radius * rng.uniform(0.8, 1.2), colour)
    for _ in range(round(8 * clutter)):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        _draw_shape(draw, str(rng.choice(["ellipse", "rectangle", "triangle"])), rng.uniform(0, 1), rng.uniform(0, 1),
                    rng.uniform(0.05, 0.25), colour)
    pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 4 + 20 * clutter, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def picture_jpeg(index: int, *, categories: int, clutter: float = WORLD_CLUTTER) -> bytes:
    buffer = io.BytesIO()
    picture(index, categories=categories, clutter=clutter).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Exact nearest neighbours by cosine (vectors unit length): the share of each picture's k
    nearest others in its own category, averaged over pictures."""
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -np.inf)
    nearest = np.argpartition(-similarities, k, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())
