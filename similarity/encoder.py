"""ResNet18 image encoder: the only module that imports torch.

The worker loads the network once per process (before its first task, see
``similarity/worker.py``) and turns batches of RGB images into 512-float, L2-normalised
vectors. Web processes never import this module.

Preparing a picture for the network (``Encoder.pixels``) is Pillow and NumPy only, so the
worker's decode threads never start torch thread pools of their own; the conversion to
normalised floats happens once per batch (``embed_pixels``).

On a GPU (``EMBEDDING_DEVICE``) the network runs in half precision and JPEGs can be decoded
there too (``prepare_jpegs``: nvJPEG, the EXIF orientation applied to the tensor, the same
resize and crop as ``pixels``); the vectors are the CPU's within ``DEVICE_COSINE_TOLERANCE``
and carry the same model identity.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

# torch's OpenMP threads otherwise spin-wait between layers, burning CPU that the decode
# threads, PostgreSQL or anything else on the machine needs (on a busy machine, batches ran
# up to half again as fast without the spinning; on an idle one, no slower). OpenMP reads
# it once, when torch loads: hence before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from torchvision.io import ImageReadMode, decode_jpeg  # noqa: E402
from torchvision.models import ResNet18_Weights, resnet18  # noqa: E402

from imagerec.cpus import cpu_share  # noqa: E402
from imaging import synthetic_photo  # noqa: E402

from .preprocessing import INPUT_SIDE, crop_geometry, network_pixels  # noqa: E402
from .weights import IMAGENET_WEIGHTS_URL, WeightsUnavailable, imagenet_weights_path, model_identity  # noqa: E402

logger = logging.getLogger(__name__)


def _imagenet_state_dict() -> dict:
    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        # torchvision's own path: the torch hub cache, downloading when online.
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, OSError, hash mismatch...
        raise WeightsUnavailable(
            "The ImageNet weights for ResNet18 are not in the torch hub cache "
            f"({imagenet_weights_path()}) and could not be downloaded ({error}). "
            f"Fix it in one of these ways: download {IMAGENET_WEIGHTS_URL} on a machine with "
            f"internet access and copy it to {imagenet_weights_path()}; or set "
            "EMBEDDING_WEIGHTS=/path/to/resnet18.pth to a saved ResNet18 state dict; or set "
            "EMBEDDING_WEIGHTS=random for a demo with untrained weights."
        ) from error


def _file_state_dict(path: str) -> dict:
    try:
        state = torch.load(os.path.expanduser(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        model_identity(path)  # raises WeightsUnavailable with the instructions
        raise
    except Exception as error:
        raise WeightsUnavailable(
            f"EMBEDDING_WEIGHTS={path} could not be read as a PyTorch state dict ({error}). "
            "Save one with torch.save(model.state_dict(), path) from a torchvision resnet18."
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailable(
            f"EMBEDDING_WEIGHTS={path} holds a {type(state).__name__}, not a state dict. "
            "Save one with torch.save(model.state_dict(), path) from a torchvision resnet18."
        )
    return state


CALIBRATION_IMAGES = 64


def _calibrate_batch_norm(network: torch.nn.Module, seed: int) -> None:
    """Give a randomly initialised network the batch-norm statistics of real-looking input.

    Untrained, a ResNet's features share one dominant direction and every pair of images
    scores above 0.95. Measuring each batch-norm layer's mean and variance on a fixed set of
    synthetic photos (deterministic for the seed) spreads them out, so even the demo's
    random network ranks look-alikes first with visibly different scores.
    """
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    batch = torch.stack(
        [transform(synthetic_photo(seed * 100_003 + index)) for index in range(CALIBRATION_IMAGES)]
    )
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    network.train()
    with torch.no_grad():
        network(batch)
    network.eval()


def build_network(weights: str, seed: int) -> torch.nn.Module:
    """ResNet18 with its classifier replaced by identity: the 512-d pooled features."""
    if weights == "random":
        # A private generator state: the same seed always gives the same network.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = resnet18(weights=None)
        _calibrate_batch_norm(network, seed)
    else:
        network = resnet18(weights=None)
        state = _imagenet_state_dict() if weights == "imagenet" else _file_state_dict(weights)
        # The classifier is replaced below, so a fine-tuned one (another number of classes,
        # hence another shape) must not stop the features from loading.
        state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        try:
            missing, unexpected = network.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes that differ: another architecture's weights
            first_problem = (str(error).splitlines()[1:2] or [str(error)])[0].strip()
            raise WeightsUnavailable(f"The weights in {weights} do not fit ResNet18 ({first_problem}).") from error
        # A feature-extractor checkpoint may lack the classifier; nothing else may be absent.
        missing = [key for key in missing if not key.startswith("fc.")]
        unexpected = [key for key in unexpected if not key.startswith("fc.")]
        if missing or unexpected:
            raise WeightsUnavailable(
                f"The weights in {weights} do not fit ResNet18 "
                f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})."
            )
    network.fc = torch.nn.Identity()
    network.eval()
    return network.to(memory_format=torch.channels_last)


# How many worker processes split this machine's CPUs; the Celery hooks set it from the
# worker's --concurrency before the encoder loads.
pool_processes = 1


def torch_threads() -> int:
    """EMBEDDING_TORCH_THREADS, or this process's share of the CPUs."""
    return settings.EMBEDDING_TORCH_THREADS or max(1, cpu_share() // max(1, pool_processes))


# --- Devices ----------------------------------------------------------------------------


class DeviceUnavailable(WeightsUnavailable):
    """EMBEDDING_DEVICE names a device this process cannot use; the message says what to do.

    A kind of WeightsUnavailable: the configured model cannot run here, which is no fault of
    the images, so they stay pending (for a worker that can) instead of failing.
    """


def embedding_device() -> torch.device:
    """The device EMBEDDING_DEVICE names; "auto" is the GPU when torch sees one, else the CPU."""
    configured = str(settings.EMBEDDING_DEVICE)
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


# Largest cosine distance between a picture's vector from the GPU path (nvJPEG at full scale,
# half precision) and the CPU worker's (Pillow's reduced-scale decode, single precision).
# The reduced-scale decode accounts for most of it (half precision alone agrees to 1e-6);
# the prepared pixels are within one grey level of Pillow's at full scale (tested on CPU
# tensors in tests/similarity/test_device.py, on the GPU where there is one).
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
def _warm_up_jpeg() -> bytearray:
    buffer = io.BytesIO()
    synthetic_photo(0, (64, 48)).save(buffer, "JPEG", quality=90)
    return bytearray(buffer.getvalue())


@dataclass
class Encoder:
    """A loaded network and its preprocessing; call ``embed`` with RGB PIL images."""

    identity: str
    network: torch.nn.Module
    transform: object
    threads: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        # The transform's normalisation folded into one multiply-add on 0-255 values.
        mean = torch.tensor(self.transform.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.transform.std).view(1, 3, 1, 1)
        self._scale = (1 / (255 * std)).to(self.device)
        self._shift = (mean / std).to(self.device)
        # Each thread that prepares pictures on a GPU does so on a CUDA stream of its own.
        self._streams = threading.local()

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    # Pillow and NumPy only (a module of its own, which web processes share for searches).
    pixels = staticmethod(network_pixels)

    def pixels_to_tensor(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised float input for a batch, already channels-last (NHWC in memory)."""
        batch = torch.from_numpy(np.stack(pixels)).to(self.device).permute(0, 3, 1, 2)
        return self._normalise(batch)

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, 224, 224), in any memory layout, to the network's float input."""
        return batch.to(torch.float32).mul_(self._scale).sub_(self._shift)

    def preprocess(self, image) -> torch.Tensor:
        """One picture's normalised (3, 224, 224) input: the weights' own transform."""
        return self.pixels_to_tensor([self.pixels(image)])[0]

    def _precision(self):
        # Half precision on a GPU: fp16 vectors agree with fp32 to a cosine of 0.999999
        # (bf16: 0.99993) and ResNet18 runs 4.6 times as fast as in fp32 on an H200. Autocast
        # keeps batch norm and the final normalisation in fp32.
        return torch.autocast("cuda", dtype=torch.float16) if self.on_gpu else contextlib.nullcontext()

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            with self._precision():
                features = self.network(batch.to(self.device).contiguous(memory_format=torch.channels_last))
            features = torch.nn.functional.normalize(features.float(), dim=1)
        return features.cpu().numpy().astype(np.float32)

    def embed_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        if not len(pixels):
            return np.zeros((0, 512), dtype=np.float32)
        return self.embed_tensors(self.pixels_to_tensor(pixels))

    def embed(self, images: Sequence) -> np.ndarray:
        return self.embed_pixels([self.pixels(image) for image in images])

    # --- Decoding JPEGs on the device -----------------------------------------------------

    def prepare_jpegs(
        self, jpegs: Sequence[bytes | bytearray], orientations: Sequence[int]
    ) -> tuple[torch.Tensor | None, list[int]]:
        """Decode JPEGs on this device and prepare them as ``pixels`` prepares a picture.

        Returns the pixels (uint8, N x 3 x 224 x 224, on the device) of the files decoded, in
        order, and the indices of those the decoder refused (for Pillow to try). Each
        picture is turned upright by its EXIF ``orientations`` entry, then resized and
        cropped with the same antialiased bilinear filter and geometry as ``pixels``, on
        the full-scale decode (Pillow's path decodes large JPEGs at reduced scale).
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
        """Upright (3, H, W) uint8 pictures to the network's 224x224 uint8 pixels, as ``pixels`` does.

        Resizing the whole picture and then cropping weighs every source pixel exactly as
        Pillow's resize of the crop box does (the same filter centres and support), so this
        matches ``pixels`` but for rounding; pictures of one size are resized together.
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

    def embed_prepared(self, device_pixels: torch.Tensor | None, host_pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Vectors for pixels ``prepare_jpegs`` made, then for pixels ``pixels`` made, in that order."""
        parts = []
        if device_pixels is not None and len(device_pixels):
            if self.on_gpu:
                # Made on another thread's stream: keep the memory from reuse until this one is done.
                device_pixels.record_stream(torch.cuda.current_stream(self.device))
            parts.append(device_pixels)
        if len(host_pixels):
            parts.append(torch.from_numpy(np.stack(host_pixels)).to(self.device).permute(0, 3, 1, 2))
        if not parts:
            return np.zeros((0, 512), dtype=np.float32)
        return self.embed_tensors(self._normalise(torch.cat(parts) if len(parts) > 1 else parts[0]))

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the network once per batch size, so the first real batch pays no set-up cost."""
        blank = np.zeros((INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
        for size in sorted(set(batch_sizes)):
            self.embed_pixels([blank] * size)
        if self.on_gpu and settings.EMBEDDING_CUDA_DECODE:
            self.prepare_jpegs([_warm_up_jpeg()], [1])  # nvJPEG sets itself up on first use


def get_encoder(*, device: str | None = None) -> Encoder:
    """The process's encoder for the configured weights and device, loaded on first use.

    ``device`` overrides EMBEDDING_DEVICE: the worker's main process checks the weights on
    the CPU, so that CUDA is first touched in the pool processes it forks (CUDA does not
    survive a fork).
    """
    device = str(torch.device(device)) if device else str(embedding_device())
    return _load_encoder(settings.EMBEDDING_WEIGHTS, settings.EMBEDDING_RANDOM_SEED, model_identity(), device)


@functools.lru_cache(maxsize=2)
def _load_encoder(weights: str, seed: int, identity: str, device: str = "cpu") -> Encoder:
    # Keyed by the identity too: a weights file replaced in place is a different model.
    threads = torch_threads()
    torch.set_num_threads(threads)
    network = build_network(weights, seed).to(torch.device(device))
    # torchvision 0.29 deprecates its image decoders for TorchCodec, which the worker does not
    # ship; they work, so the warning is silenced once here rather than issued per batch.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
    # The weights' own preprocessing: resize 256, centre crop 224, ImageNet mean and std.
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    logger.info("Loaded %s with %d torch threads on %s", identity, threads, device)
    return Encoder(
        identity=identity, network=network, transform=transform, threads=threads, device=torch.device(device)
    )
