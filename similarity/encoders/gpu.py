"""The GPU path: which device EMBEDDING_DEVICE names, and JPEGs decoded and prepared there.

``DeviceJpegs.prepare`` decodes a batch of JPEGs with nvJPEG (torchvision's ``decode_jpeg`` on
a CUDA device), turns each upright by its EXIF orientation and resizes and crops it as
``similarity.preprocessing.network_pixels`` does, leaving the network's uint8 pixels on the
device. On a CPU device the same code runs with torchvision's CPU decoder, which is how the
tests check it without a GPU. The vectors are the CPU path's within ``DEVICE_COSINE_TOLERANCE``
and carry the same model identity.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

# Before torch loads, whichever of this module and resnet18 is imported first (the reason
# is given there).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from torchvision.io import ImageReadMode, decode_jpeg  # noqa: E402

from imaging import synthetic_photo  # noqa: E402

from ..preprocessing import INPUT_SIDE, crop_geometry  # noqa: E402
from .base import WeightsUnavailable  # noqa: E402

# --- Devices ----------------------------------------------------------------------------


class DeviceUnavailable(WeightsUnavailable):
    """EMBEDDING_DEVICE names a device this process cannot use; the message says what to do.

    A kind of WeightsUnavailable: the configured model cannot run here, which is no fault of
    the images, so they stay pending (for a worker that can) instead of failing.
    """


def embedding_device(configured: str | None = None) -> torch.device:
    """The device EMBEDDING_DEVICE (or ``configured``) names; "auto" is the GPU when torch sees one, else the CPU."""
    configured = str(settings.EMBEDDING_DEVICE if configured is None else configured)
    wanted = configured.strip().lower()
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "cuda" or (wanted.startswith("cuda:") and wanted[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"EMBEDDING_DEVICE={configured}, but torch sees no CUDA GPU in this process (no driver, "
                "a container started without GPU access, or a CPU-only torch build). Set "
                "EMBEDDING_DEVICE=cpu, or auto to use a GPU only where there is one."
            )
        device = torch.device(wanted)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"EMBEDDING_DEVICE={configured}, but this machine has {torch.cuda.device_count()} GPU(s), "
                "numbered from 0."
            )
        return device
    raise DeviceUnavailable(f"EMBEDDING_DEVICE={configured!r} is not a device: use auto, cpu, cuda or cuda:N.")


# --- Decoding JPEGs on the device ------------------------------------------------------

# Largest cosine distance between a picture's vector from the GPU path (nvJPEG at full scale,
# half precision) and the CPU worker's (Pillow's reduced-scale decode, single precision).
# The reduced-scale decode accounts for most of it (half precision alone agrees to 1e-6);
# the prepared pixels are within one grey level of Pillow's at full scale (tested on CPU
# tensors in tests/similarity/encoders/test_gpu.py, on the GPU where there is one).
DEVICE_COSINE_TOLERANCE = 1e-3
# JPEGs per nvJPEG call: one call decodes a batch on the GPU's hardware decoder.
DECODE_CHUNK = 64
# Same-sized pictures resized together; bounds the float copy (16 x 72 MB at 6 megapixels).
RESIZE_CHUNK = 16


def oriented(picture: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (channels, height, width) picture turned the way ``ImageOps.exif_transpose`` turns it."""
    if orientation == 2:  # mirrored
        return picture.flip(-1)
    if orientation == 3:  # upside down
        return picture.flip(-2, -1)
    if orientation == 4:  # mirrored upside down
        return picture.flip(-2)
    if orientation == 5:  # Pillow's TRANSPOSE
        return picture.transpose(-2, -1)
    if orientation == 6:  # Pillow's ROTATE_270: a quarter turn clockwise
        return picture.rot90(-1, dims=(-2, -1))
    if orientation == 7:  # Pillow's TRANSVERSE
        return picture.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:  # Pillow's ROTATE_90: a quarter turn anticlockwise
        return picture.rot90(1, dims=(-2, -1))
    return picture


@functools.cache
def warm_up_jpeg() -> bytearray:
    """A small JPEG to set nvJPEG up with before the first real batch."""
    buffer = io.BytesIO()
    synthetic_photo(0, (64, 48)).save(buffer, "JPEG", quality=90)
    return bytearray(buffer.getvalue())


@dataclass
class DeviceJpegs:
    """Decodes JPEGs on ``device`` into the network's 224x224 uint8 pixels, as ``network_pixels`` prepares them."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        # Each thread that prepares pictures on a GPU does so on a CUDA stream of its own.
        self._streams = threading.local()

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def prepare(
        self, jpegs: Sequence[bytes | bytearray], orientations: Sequence[int]
    ) -> tuple[torch.Tensor | None, list[int]]:
        """Decode JPEGs on this device and prepare them as ``network_pixels`` prepares a picture.

        Returns the pixels (uint8, N x 3 x 224 x 224, on the device) of the files decoded, in
        order, and the indices of those the decoder refused (for Pillow to try). Each
        picture is turned upright by its EXIF ``orientations`` entry, then resized and
        cropped with the same antialiased bilinear filter and geometry as ``network_pixels``,
        on the full-scale decode (Pillow's path decodes large JPEGs at reduced scale).
        Thread-safe; on a GPU each calling thread uses a CUDA stream of its own, and the
        pixels are ready when this returns.
        """
        prepared, refused = [], []
        with self._own_stream() as stream:
            for start in range(0, len(jpegs), DECODE_CHUNK):
                chunk = range(start, min(start + DECODE_CHUNK, len(jpegs)))
                pictures = []
                for index, picture in zip(chunk, self._decode([jpegs[index] for index in chunk])):
                    if picture is None:
                        refused.append(index)
                    else:
                        pictures.append(oriented(picture, orientations[index]))
                if pictures:
                    prepared.append(self._resize_and_crop(pictures))
            pixels = torch.cat(prepared) if len(prepared) > 1 else (prepared[0] if prepared else None)
            if stream is not None:
                stream.synchronize()
        return pixels, refused

    @contextlib.contextmanager
    def _own_stream(self):
        if not self.on_gpu:
            yield None
            return
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            stream = self._streams.stream = torch.cuda.Stream(device=self.device)
        with torch.cuda.stream(stream):
            yield stream

    def _decode(self, jpegs: Sequence[bytes | bytearray]) -> list[torch.Tensor | None]:
        # frombuffer shares a bytearray's memory; bytes are read-only, so they are copied.
        tensors = [
            torch.frombuffer(bytearray(jpeg) if isinstance(jpeg, bytes) else jpeg, dtype=torch.uint8) for jpeg in jpegs
        ]
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            # One refused file fails the whole call: find it by decoding one at a time.
            decoded = []
            for tensor in tensors:
                try:
                    decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
            return decoded

    def _resize_and_crop(self, pictures: Sequence[torch.Tensor]) -> torch.Tensor:
        """Upright (3, H, W) uint8 pictures to the network's 224x224 uint8 pixels, as ``network_pixels`` does.

        Resizing the whole picture and then cropping weighs every source pixel exactly as
        Pillow's resize of the crop box does (the same filter centres and support), so this
        matches ``network_pixels`` but for rounding; pictures of one size are resized together.
        """
        out = torch.empty((len(pictures), 3, INPUT_SIDE, INPUT_SIDE), dtype=torch.uint8, device=self.device)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, picture in enumerate(pictures):
            by_size.setdefault(tuple(picture.shape[-2:]), []).append(index)
        for (height, width), members in by_size.items():
            resized_width, resized_height, top, left = crop_geometry(width, height)
            for start in range(0, len(members), RESIZE_CHUNK):
                part = members[start : start + RESIZE_CHUNK]
                batch = torch.stack([pictures[index] for index in part]).to(torch.float32)
                resized = torch.nn.functional.interpolate(
                    batch, size=(resized_height, resized_width), mode="bilinear", antialias=True, align_corners=False
                )
                crop = resized[:, :, top : top + INPUT_SIDE, left : left + INPUT_SIDE]
                out[part] = crop.round().clamp_(0, 255).to(torch.uint8)
        return out
