"""ResNet18 image encoder: the only module that imports torch.

The worker loads the network once per process (before its first task, see
``similarity/worker.py``) and turns batches of RGB images into 512-float, L2-normalised
vectors. Web processes never import this module.

Preparing a picture for the network (``Encoder.pixels``) is Pillow and NumPy only, so the
worker's decode threads never start torch thread pools of their own; the conversion to
normalised floats happens once per batch (``embed_pixels``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

# torch's OpenMP threads otherwise spin-wait between layers, burning CPU that the decode
# threads, PostgreSQL or anything else on the machine needs (on a busy machine, batches ran
# up to half again as fast without the spinning; on an idle one, no slower). OpenMP reads
# it once, when torch loads: hence before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.models import ResNet18_Weights, resnet18  # noqa: E402

from imagerec.cpus import cpu_share  # noqa: E402
from imagerec.imaging import synthetic_photo  # noqa: E402

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


INPUT_SIDE = 224  # the centre crop the network sees
RESIZE_SIDE = 256  # the shorter side before that crop


@dataclass
class Encoder:
    """A loaded network and its preprocessing; call ``embed`` with RGB PIL images."""

    identity: str
    network: torch.nn.Module
    transform: object
    threads: int = 1

    def __post_init__(self):
        # The transform's normalisation folded into one multiply-add on 0-255 values.
        mean = torch.tensor(self.transform.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.transform.std).view(1, 3, 1, 1)
        self._scale = 1 / (255 * std)
        self._shift = mean / std

    @staticmethod
    def pixels(image: Image.Image) -> np.ndarray:
        """The 224x224 RGB pixels the network sees, as uint8 (height, width, 3).

        The weights' transform resizes the shorter side to 256 and crops the centre 224;
        here one bilinear resize of just the cropped region does both, at half the cost.
        The pixels are the same but for rounding (one level apart, here and there).
        Pillow and NumPy only: safe to run in many threads while torch runs a batch.
        """
        width, height = image.size
        # torchvision's arithmetic for the resized size and the crop's offsets.
        if width <= height:
            resized_width, resized_height = RESIZE_SIDE, int(RESIZE_SIDE * height / width)
        else:
            resized_width, resized_height = int(RESIZE_SIDE * width / height), RESIZE_SIDE
        top = int(round((resized_height - INPUT_SIDE) / 2.0))
        left = int(round((resized_width - INPUT_SIDE) / 2.0))
        x_scale, y_scale = width / resized_width, height / resized_height
        box = (left * x_scale, top * y_scale, (left + INPUT_SIDE) * x_scale, (top + INPUT_SIDE) * y_scale)
        cropped = image.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR, box=box)
        return np.asarray(cropped, dtype=np.uint8)

    def pixels_to_tensor(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """Normalised float input for a batch, already channels-last (NHWC in memory)."""
        batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
        return batch.to(torch.float32).mul_(self._scale).sub_(self._shift)

    def preprocess(self, image) -> torch.Tensor:
        """One picture's normalised (3, 224, 224) input: the weights' own transform."""
        return self.pixels_to_tensor([self.pixels(image)])[0]

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            features = self.network(batch.contiguous(memory_format=torch.channels_last))
            features = torch.nn.functional.normalize(features, dim=1)
        return features.numpy().astype(np.float32)

    def embed_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        if not len(pixels):
            return np.zeros((0, 512), dtype=np.float32)
        return self.embed_tensors(self.pixels_to_tensor(pixels))

    def embed(self, images: Sequence) -> np.ndarray:
        return self.embed_pixels([self.pixels(image) for image in images])

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the network once per batch size, so the first real batch pays no set-up cost."""
        blank = np.zeros((INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
        for size in sorted(set(batch_sizes)):
            self.embed_pixels([blank] * size)


def get_encoder() -> Encoder:
    """The process's encoder for the configured weights, loaded on first use."""
    return _load_encoder(settings.EMBEDDING_WEIGHTS, settings.EMBEDDING_RANDOM_SEED, model_identity())


@functools.lru_cache(maxsize=2)
def _load_encoder(weights: str, seed: int, identity: str) -> Encoder:
    # Keyed by the identity too: a weights file replaced in place is a different model.
    threads = torch_threads()
    torch.set_num_threads(threads)
    network = build_network(weights, seed)
    # The weights' own preprocessing: resize 256, centre crop 224, ImageNet mean and std.
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    logger.info("Loaded %s with %d torch threads", identity, threads)
    return Encoder(identity=identity, network=network, transform=transform, threads=threads)
