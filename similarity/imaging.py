"""Turn any accepted image file into the RGB picture the network sees (Pillow only).

- EXIF orientation is applied, so a photo taken sideways is embedded upright.
- Animated GIF/WebP and multi-page TIFF: the first frame.
- Palette, grayscale and CMYK images are converted to RGB; 16-bit and 32-bit grayscale are
  scaled to 8 bits; transparency (LA, RGBA, PA, palette with transparency) is composited
  on white, as the image would look on the site's page.
- Large JPEGs are decoded at reduced scale (Pillow's ``draft``, DCT scaling) to at least
  ``DRAFT_MIN_SIDE`` pixels on the shorter side: the network only needs 224x224, so a
  24-megapixel photo costs little more than a small one. The embedding of a drafted decode
  stays within ``DRAFT_COSINE_TOLERANCE`` of the full decode (tested).
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps

# Twice the 256-pixel resize of the ImageNet transform, so the final resize still averages.
DRAFT_MIN_SIDE = 512
DRAFT_COSINE_TOLERANCE = 0.01
WHITE = (255, 255, 255)


class UndecodableImage(ValueError):
    """The file cannot be turned into a picture; retrying will not help."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Scale the full 16-bit range down, rather than clipping everything above 255.
        scale = 1 / 256 if image.mode.startswith("I;16") or image.getextrema()[1] <= 65535 else 1 / 2**24
        image = image.convert("I").point(lambda value: value * scale).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def load_rgb(
    source, *, draft: bool = True, max_pixels: int | None = None, draft_min_side: int = DRAFT_MIN_SIDE
) -> Image.Image:
    """Decode ``source`` (a path or a binary file) into an upright RGB image."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous_limit = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with Image.open(source) as image:
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                if draft and image.format == "JPEG":
                    width, height = image.size
                    shorter = min(width, height)
                    if shorter > draft_min_side:
                        scale = draft_min_side / shorter
                        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
                image.load()
                # Always a new image (transposed, or a copy), so its pixels outlive the
                # file's closing without another copy.
                upright = ImageOps.exif_transpose(image)
                return _to_rgb(upright)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UndecodableImage(f"The image has too many pixels to process safely ({error}).") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UndecodableImage(f"The image cannot be decoded: {error or type(error).__name__}.") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous_limit


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
