"""The GPU path: which device EMBEDDING_DEVICE names, and JPEGs decoded and prepared there.

``DeviceJpegs.prepare`` decodes a batch of JPEGs with nvJPEG (torchvision's ``decode_jpeg`` on
a CUDA device), turns each upright by its EXIF orientation and resizes and crops it as
``similarity.preprocessing.network_pixels`` does, leaving the network's uint8 pixels on the
device. On a CPU device the same code runs with torchvision's CPU decoder, which is how the
tests check it without a GPU. The vectors are the CPU path's within ``DEVICE_COSINE_TOLERANCE``
and carry the same model identity. A decoder that keeps failing is reported and left alone
for a while (Pillow decodes meanwhile), and ``device_fault`` tells the worker which failures
were the GPU's rather than the images'.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
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

logger = logging.getLogger(__name__)

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


# Device failures that torch reports as a plain RuntimeError (older code paths, cuDNN and
# cuBLAS) rather than as torch.AcceleratorError.
_DEVICE_ERROR = re.compile(r"CUDA error|CUDA driver|CUDNN_STATUS_|CUBLAS_STATUS_|cuDNN error|device-side assert")


def device_fault(error: BaseException) -> str | None:
    """What a failure says about the device: "out of memory", "broken" (the CUDA context is
    unusable for the rest of the process), or None when it is not the device's.

    Either way it is no fault of the images being embedded.
    """
    if isinstance(error, torch.OutOfMemoryError):
        return "out of memory"
    if isinstance(error, torch.AcceleratorError) or (
        isinstance(error, RuntimeError) and _DEVICE_ERROR.search(str(error))
    ):
        return "broken"
    return None


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
# Chunks in a row whose batched decode call failed before the worker stops sending JPEGs to
# the GPU decoder, and for how long it then decodes everything with Pillow. An unusable
# nvJPEG (no hardware decoder, a container without NVIDIA's video capability) fails every
# chunk, and each failure costs the batched call plus one call per file (65 for 64 files);
# one bad file fails only its own chunk.
DECODER_FAILURES_BEFORE_PILLOW = 3
DECODER_COOL_DOWN_SECONDS = 300.0


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
def warm_up_jpeg(size: tuple[int, int] = (64, 48)) -> bytearray:
    """A baseline JPEG to set nvJPEG up with (and time it on) before the first real batch."""
    buffer = io.BytesIO()
    synthetic_photo(0, size).save(buffer, "JPEG", quality=90)
    return bytearray(buffer.getvalue())


@dataclass
class DeviceJpegs:
    """Decodes JPEGs on ``device`` into the network's 224x224 uint8 pixels, as ``network_pixels`` prepares them."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # torchvision's decoder; the tests give one that fails, to check what the worker does then.
    decode: Callable = decode_jpeg
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self):
        # Each thread that prepares pictures on a GPU does so on a CUDA stream of its own.
        self._streams = threading.local()
        self._health = threading.Lock()
        self._failed_chunks = 0  # batched calls failed in a row
        self._refused_before = False  # the first refusal is logged with its reason
        self._pillow_until = None  # clock time until which every JPEG goes to Pillow

    def in_use(self) -> bool:
        """False while the decoder cools down after repeated failures: JPEGs go to Pillow then."""
        with self._health:
            if self._pillow_until is not None and self.clock() >= self._pillow_until:
                self._pillow_until, self._failed_chunks = None, 0
                logger.info("Cool-down over: JPEGs go to the %s decoder again", self.device)
            return self._pillow_until is None

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
        pixels are ready when this returns. While the decoder cools down after repeated
        failures (``in_use``), every file is returned as refused, for Pillow.
        """
        prepared, refused = [], []
        with self._own_stream() as stream:
            for start in range(0, len(jpegs), DECODE_CHUNK):
                chunk = range(start, min(start + DECODE_CHUNK, len(jpegs)))
                if not self.in_use():
                    refused.extend(chunk)
                    continue
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
            decoded = list(self.decode(tensors, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as error:
            if device_fault(error) == "out of memory":
                raise  # the pipeline's to handle: smaller batches, not Pillow
            self._chunk_failed(error, len(tensors))
        else:
            with self._health:
                self._failed_chunks = 0
            return decoded
        # One refused file fails the whole call: find it by decoding one at a time.
        decoded = []
        for tensor in tensors:
            try:
                decoded.append(self.decode(tensor, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                decoded.append(None)
        return decoded

    def _chunk_failed(self, error: RuntimeError, files: int) -> None:
        with self._health:
            self._failed_chunks += 1
            first, self._refused_before = not self._refused_before, True
            cooling = self._failed_chunks >= DECODER_FAILURES_BEFORE_PILLOW and self._pillow_until is None
            if cooling:
                self._pillow_until = self.clock() + DECODER_COOL_DOWN_SECONDS
        if first:
            logger.warning(
                "The %s JPEG decoder refused a batch of %d file(s) (%s); trying them one by one, Pillow takes "
                "those it refuses", self.device, files, error,
            )
        if cooling:
            logger.error(
                "The %s JPEG decoder failed %d batches in a row (last: %s): every file goes through Pillow for "
                "the next %g s", self.device, self._failed_chunks, error, DECODER_COOL_DOWN_SECONDS,
            )

    def warm_up(self, files: int = DECODE_CHUNK) -> float:
        """Set the decoder up, then time one batch of ``files`` photos; returns and logs the rate (files/s).

        A rate far below the GPU's (thousands per second) says the hardware decoder is not
        in use, which the worker's own rate would otherwise show only as a mystery.
        """
        self.prepare([warm_up_jpeg()], [1])  # nvJPEG sets itself up on first use
        batch = [warm_up_jpeg((1024, 768))] * files
        started = time.perf_counter()
        _, refused = self.prepare(batch, [1] * files)
        rate = (files - len(refused)) / (time.perf_counter() - started)
        logger.info(
            "The %s JPEG decoder prepares %.0f photos/s (one batch of %d at 1024x768)%s",
            self.device, rate, files, f"; it refused {len(refused)}" if refused else "",
        )
        return rate

    def _resize_and_crop(self, pictures: Sequence[torch.Tensor]) -> torch.Tensor:
        """Upright (3, H, W) uint8 pictures to the network's 224x224 uint8 pixels, as ``network_pixels`` does.

        Resizing the whole picture and then cropping weighs every source pixel exactly as
        Pillow's resize of the crop box does (the same filter centres and support), so this
        matches ``network_pixels`` but for rounding; pictures of one size are resized together.

        Nothing here waits for the device: sizes come from the tensors' shapes (known on the
        host), and each crop is kept as a view until one stack puts them back in order.
        Assigning into a preallocated batch at a list of positions (``out[part] = crop``)
        copies that list to the device from pageable memory, which synchronises the stream:
        once per size group and chunk, so once per picture when every size differs.
        """
        crops: list[torch.Tensor | None] = [None] * len(pictures)
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
                for index, pixels in zip(part, crop.round().clamp_(0, 255).to(torch.uint8)):
                    crops[index] = pixels
        return torch.stack(crops)
