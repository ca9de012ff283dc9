"""ResNet18 (torchvision, classifier removed): 512 floats per picture, L2-normalised.

The worker loads the network once per process (before its first task, see
``similarity/worker.py``) through ``similarity.encoders.registry``. Web processes never
import this module.

Preparing a picture for the network (``pixels``) is Pillow and NumPy only, so the
worker's decode threads never start torch thread pools of their own; the conversion to
normalised floats happens once per batch (``embed_pixels``).

On a GPU (``EMBEDDING_DEVICE``) the network runs in half precision and JPEGs can be decoded
there too (``prepare_jpegs``, with ``similarity.encoders.gpu``); the vectors carry the same
model identity as the CPU's.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
from torchvision.models import ResNet18_Weights, resnet18  # noqa: E402

from imaging import synthetic_photo  # noqa: E402

from ..preprocessing import INPUT_SIDE, network_pixels  # noqa: E402
from ..weights import imagenet_weights_path, imagenet_weights_url, model_identity  # noqa: E402
from . import base  # noqa: E402
from .base import WeightsUnavailable  # noqa: E402
from .gpu import DeviceJpegs, embedding_device  # noqa: E402
from .registry import RESNET18  # noqa: E402

logger = logging.getLogger(__name__)


def _imagenet_state_dict() -> dict:
    weights = ResNet18_Weights.IMAGENET1K_V1
    try:
        # torchvision's own path: the torch hub cache, downloading when online.
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, OSError, hash mismatch...
        raise WeightsUnavailable(
            "The ImageNet weights for ResNet18 are not in the torch hub cache "
            f"({imagenet_weights_path(RESNET18)}) and could not be downloaded ({error}). "
            f"Fix it in one of these ways: download {imagenet_weights_url(RESNET18)} on a machine with "
            f"internet access and copy it to {imagenet_weights_path(RESNET18)}; or set "
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


@dataclass
class ResNet18Encoder:
    """A loaded network and its preprocessing (an ``Encoder``); call ``embed`` with RGB PIL images."""

    identity: str
    network: torch.nn.Module
    transform: object
    threads: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # JPEGs decoded on this encoder's device (``prepare_jpegs``).
    jpegs: DeviceJpegs | None = None
    dimension: int = RESNET18.dimension

    def __post_init__(self):
        # The transform's normalisation folded into one multiply-add on 0-255 values.
        mean = torch.tensor(self.transform.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.transform.std).view(1, 3, 1, 1)
        self._scale = (1 / (255 * std)).to(self.device)
        self._shift = (mean / std).to(self.device)
        if self.jpegs is None:
            self.jpegs = DeviceJpegs(self.device)

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
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.embed_tensors(self.pixels_to_tensor(pixels))

    def embed(self, images: Sequence) -> np.ndarray:
        return self.embed_pixels([self.pixels(image) for image in images])

    # --- Decoding JPEGs on the device -----------------------------------------------------

    def prepare_jpegs(
        self, jpegs: Sequence[bytes | bytearray], orientations: Sequence[int]
    ) -> tuple[torch.Tensor | None, list[int]]:
        """JPEGs decoded and prepared on this device, as ``pixels`` prepares a picture (``DeviceJpegs.prepare``)."""
        return self.jpegs.prepare(jpegs, orientations)

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
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.embed_tensors(self._normalise(torch.cat(parts) if len(parts) > 1 else parts[0]))

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the network once per batch size, so the first real batch pays no set-up cost."""
        blank = np.zeros((INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
        for size in sorted(set(batch_sizes)):
            self.embed_pixels([blank] * size)
        if self.on_gpu and settings.EMBEDDING_CUDA_DECODE:
            self.jpegs.warm_up()  # sets nvJPEG up, then times one batch and logs the rate


def load(*, weights: str, seed: int, identity: str, device: str) -> ResNet18Encoder:
    """The registry's loader: the network for ``weights`` on ``device`` (EMBEDDING_DEVICE's spelling)."""
    resolved = embedding_device(device)
    threads = base.torch_threads()
    torch.set_num_threads(threads)
    network = build_network(weights, seed).to(resolved)
    # torchvision 0.29 deprecates its image decoders for TorchCodec, which the worker does not
    # ship; they work, so the warning is silenced once here rather than issued per batch.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
    # The weights' own preprocessing: resize 256, centre crop 224, ImageNet mean and std.
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    logger.info("Loaded %s with %d torch threads on %s", identity, threads, resolved)
    return ResNet18Encoder(identity=identity, network=network, transform=transform, threads=threads, device=resolved)
