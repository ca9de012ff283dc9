"""Which network and weights are configured, named without importing torch.

Every stored embedding records this identity; queries compare only embeddings of the
identity configured now, so changing the weights makes the older vectors stale.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from django.conf import settings

ARCHITECTURE = "resnet18"
IMAGENET_WEIGHTS_FILE = "resnet18-f37072fd.pth"
IMAGENET_WEIGHTS_URL = f"https://download.pytorch.org/models/{IMAGENET_WEIGHTS_FILE}"


class WeightsUnavailable(RuntimeError):
    """The configured weights cannot be loaded; the message says what to do."""


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch ($TORCH_HOME, else $XDG_CACHE_HOME/torch)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "torch" / "hub"


def imagenet_weights_path() -> Path:
    return torch_hub_dir() / "checkpoints" / IMAGENET_WEIGHTS_FILE


def imagenet_weights_cached() -> bool:
    return imagenet_weights_path().is_file()


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file_identity(path: str | os.PathLike) -> str:
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        raise WeightsUnavailable(
            f"EMBEDDING_WEIGHTS names a weights file that does not exist: {path}. "
            "Put a ResNet18 state dict there (torch.save(model.state_dict(), path)), or set "
            "EMBEDDING_WEIGHTS=imagenet (torchvision's ImageNet weights) or EMBEDDING_WEIGHTS=random."
        ) from None
    return f"{ARCHITECTURE}/file-{_file_digest(str(path), stat.st_size, stat.st_mtime_ns)[:12]}"


def model_identity(weights: str | None = None, seed: int | None = None) -> str:
    """The identity of the configured weights, e.g. 'resnet18/imagenet1k-v1'."""
    weights = settings.EMBEDDING_WEIGHTS if weights is None else weights
    seed = settings.EMBEDDING_RANDOM_SEED if seed is None else seed
    if weights == "imagenet":
        return f"{ARCHITECTURE}/imagenet1k-v1"
    if weights == "random":
        return f"{ARCHITECTURE}/random-seed{seed}"
    return weights_file_identity(weights)


def uses_random_weights() -> bool:
    return settings.EMBEDDING_WEIGHTS == "random"
