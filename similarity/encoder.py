"""ResNet18 image encoder: the only module that imports torch.

The worker loads the network once per process, lazily, and turns batches of RGB images
into 512-float, L2-normalised vectors. Web processes never import this module.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from django.conf import settings
from torchvision.models import ResNet18_Weights, resnet18

from .identity import IMAGENET_WEIGHTS_URL, WeightsUnavailable, imagenet_weights_path, model_identity
from .imaging import synthetic_photo

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


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass
class Encoder:
    """A loaded network and its preprocessing; call ``embed`` with RGB PIL images."""

    identity: str
    network: torch.nn.Module
    transform: object

    def preprocess(self, image) -> torch.Tensor:
        return self.transform(image)

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            features = self.network(batch.contiguous(memory_format=torch.channels_last))
            features = torch.nn.functional.normalize(features, dim=1)
        return features.numpy().astype(np.float32)

    def embed(self, images: Sequence) -> np.ndarray:
        if not images:
            return np.zeros((0, 512), dtype=np.float32)
        return self.embed_tensors(torch.stack([self.preprocess(image) for image in images]))


def get_encoder() -> Encoder:
    """The process's encoder for the configured weights, loaded on first use."""
    return _load_encoder(settings.EMBEDDING_WEIGHTS, settings.EMBEDDING_RANDOM_SEED, model_identity())


@functools.lru_cache(maxsize=2)
def _load_encoder(weights: str, seed: int, identity: str) -> Encoder:
    # Keyed by the identity too: a weights file replaced in place is a different model.
    threads = settings.EMBEDDING_TORCH_THREADS or _available_cpus()
    torch.set_num_threads(threads)
    network = build_network(weights, seed)
    # The weights' own preprocessing: resize 256, centre crop 224, ImageNet mean and std.
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    logger.info("Loaded %s with %d torch threads", identity, threads)
    return Encoder(identity=identity, network=network, transform=transform)
