"""A picture to the pixels the network sees: Pillow and NumPy only, so any process may run it.

The embedding worker prepares every stored image with ``network_pixels``; the web process
prepares a visitor's search photo with the very same function, so a gallery image's own file
reaches the network as the same 224x224 pixels whichever road it took.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

INPUT_SIDE = 224  # the centre crop the network sees
RESIZE_SIDE = 256  # the shorter side before that crop
# The prepared pixels, uint8 RGB (height, width, 3): what a search sends to a worker.
PIXELS_SHAPE = (INPUT_SIDE, INPUT_SIDE, 3)
PIXELS_BYTES = INPUT_SIDE * INPUT_SIDE * 3


def crop_geometry(width: int, height: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, top, left): torchvision's arithmetic for resize 256, crop 224."""
    if width <= height:
        resized_width, resized_height = RESIZE_SIDE, int(RESIZE_SIDE * height / width)
    else:
        resized_width, resized_height = int(RESIZE_SIDE * width / height), RESIZE_SIDE
    top = int(round((resized_height - INPUT_SIDE) / 2.0))
    left = int(round((resized_width - INPUT_SIDE) / 2.0))
    return resized_width, resized_height, top, left


def network_pixels(image: Image.Image) -> np.ndarray:
    """The 224x224 RGB pixels the network sees, as uint8 (height, width, 3).

    The weights' transform resizes the shorter side to 256 and crops the centre 224;
    here one bilinear resize of just the cropped region does both, at half the cost.
    The pixels are the same but for rounding (one level apart, here and there).
    Safe to run in many threads while torch runs a batch.
    """
    width, height = image.size
    resized_width, resized_height, top, left = crop_geometry(width, height)
    x_scale, y_scale = width / resized_width, height / resized_height
    box = (left * x_scale, top * y_scale, (left + INPUT_SIDE) * x_scale, (top + INPUT_SIDE) * y_scale)
    cropped = image.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR, box=box)
    return np.asarray(cropped, dtype=np.uint8)
