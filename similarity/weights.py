"""Which model and weights are configured, named without importing torch.

Every stored embedding records this identity (``<encoder>/<weights>``, e.g.
"resnet18/imagenet1k-v1"); queries compare only embeddings of the identity configured now, so
changing the encoder or its weights makes the older vectors stale. The encoder's facts (its
name, its checkpoint) come from its family in ``similarity.encoders.registry``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from django.conf import settings

from .encoders.base import EncoderFamily, WeightsUnavailable
from .encoders.registry import configured_family


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch ($TORCH_HOME, else $XDG_CACHE_HOME/torch)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "torch" / "hub"


def imagenet_weights_url(family: EncoderFamily | None = None) -> str:
    """Where torchvision downloads the configured encoder's ImageNet checkpoint from."""
    return f"https://download.pytorch.org/models/{(family or configured_family()).weights_file}"


def imagenet_weights_path(family: EncoderFamily | None = None) -> Path:
    return torch_hub_dir() / "checkpoints" / (family or configured_family()).weights_file


def imagenet_weights_cached(family: EncoderFamily | None = None) -> bool:
    return imagenet_weights_path(family).is_file()


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file_identity(path: str | os.PathLike, family: EncoderFamily | None = None) -> str:
    family = family or configured_family()
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        raise WeightsUnavailable(
            f"EMBEDDING_WEIGHTS names a weights file that does not exist: {path}. "
            f"Put a {family.name} state dict there (torch.save(model.state_dict(), path)), or set "
            "EMBEDDING_WEIGHTS=imagenet (torchvision's ImageNet weights) or EMBEDDING_WEIGHTS=random."
        ) from None
    return f"{family.name}/file-{_file_digest(str(path), stat.st_size, stat.st_mtime_ns)[:12]}"


def model_identity(weights: str | None = None, seed: int | None = None) -> str:
    """The identity of the configured encoder and weights, e.g. 'resnet18/imagenet1k-v1'."""
    family = configured_family()
    if not family.uses_weights:
        return f"{family.name}/{family.version}"
    weights = settings.EMBEDDING_WEIGHTS if weights is None else weights
    seed = settings.EMBEDDING_RANDOM_SEED if seed is None else seed
    if weights == "imagenet":
        return f"{family.name}/imagenet1k-v1"
    if weights == "random":
        return f"{family.name}/random-seed{seed}"
    return weights_file_identity(weights, family)


def uses_random_weights() -> bool:
    return settings.EMBEDDING_WEIGHTS == "random"
