"""Image decoding, below both apps: the one place that turns image files into pictures (Pillow only).

``decode`` (upload validation, renditions, the embedding worker) is in ``imaging.decoding``;
the checks of TIFFs that libtiff decodes only in part in ``imaging.tiff``; ``synthetic_photo``
(test and demo pictures) in ``imaging.synthetic``. Importing the package changes nothing:
Pillow's process-wide settings are made by ``configure_pillow``, called at start-up.
"""

from .decoding import (
    DRAFT_COSINE_TOLERANCE,
    DRAFT_MIN_SIDE,
    Decoded,
    NotAnImage,
    TooManyPixels,
    UndecodableImage,
    UnsupportedFormat,
    configure_pillow,
    decode,
    load_rgb,
)
from .synthetic import synthetic_photo

__all__ = [
    "DRAFT_COSINE_TOLERANCE",
    "DRAFT_MIN_SIDE",
    "Decoded",
    "NotAnImage",
    "TooManyPixels",
    "UndecodableImage",
    "UnsupportedFormat",
    "configure_pillow",
    "decode",
    "load_rgb",
    "synthetic_photo",
]
