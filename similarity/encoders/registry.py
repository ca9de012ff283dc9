"""The encoders this site can run, by name and by model identity, and the process's loaded one.

EMBEDDING_ENCODER names the configured family (default "resnet18"). A family is declared
torch-free (``EncoderFamily``): ResNet18 here, others in modules that EMBEDDING_ENCODER_MODULES
lists, each holding a ``FAMILY``. The registry imports those modules on its first lookup, not
when it is imported, and imports an encoder's implementation (torch) only in ``get_encoder``,
which the worker calls: web processes look families up without loading a network.
"""

from __future__ import annotations

import functools
import importlib
import logging

from django.conf import settings

from .base import Encoder, EncoderFamily, WeightsUnavailable

logger = logging.getLogger(__name__)

RESNET18 = EncoderFamily(
    name="resnet18",
    dimension=512,
    load="similarity.encoders.resnet18:load",
    weights_file="resnet18-f37072fd.pth",
)
BUILT_IN = (RESNET18,)


@functools.cache
def _families(modules: tuple[str, ...]) -> dict[str, EncoderFamily]:
    families = {family.name: family for family in BUILT_IN}
    for path in modules:
        family = getattr(importlib.import_module(path), "FAMILY", None)
        if not isinstance(family, EncoderFamily):
            raise WeightsUnavailable(f"EMBEDDING_ENCODER_MODULES lists {path}, which has no FAMILY = EncoderFamily(...).")
        if family.name in families and families[family.name] != family:
            raise WeightsUnavailable(f"Two encoders are named {family.name!r}: rename the one in {path}.")
        families[family.name] = family
    return families


def families() -> dict[str, EncoderFamily]:
    """Every encoder this process knows: the built-in ones and EMBEDDING_ENCODER_MODULES's."""
    return _families(tuple(settings.EMBEDDING_ENCODER_MODULES))


def family(name: str) -> EncoderFamily:
    known = families()
    if name not in known:
        raise WeightsUnavailable(
            f"EMBEDDING_ENCODER={name!r} is not a known encoder (known: {', '.join(sorted(known))}). "
            "Set it to one of those, or list the module that defines it in EMBEDDING_ENCODER_MODULES."
        )
    return known[name]


def configured_family() -> EncoderFamily:
    return family(settings.EMBEDDING_ENCODER)


def family_of_identity(identity: str) -> EncoderFamily:
    """The family a stored model identity ("resnet18/imagenet1k-v1") belongs to."""
    return family(identity.split("/", 1)[0])


def get_encoder(*, device: str | None = None) -> Encoder:
    """The process's encoder for the configured family, weights and device, loaded on first use.

    ``device`` overrides EMBEDDING_DEVICE: the worker's main process checks the weights on
    the CPU, so that CUDA is first touched in the pool processes it forks (CUDA does not
    survive a fork).
    """
    from ..weights import model_identity

    chosen = configured_family()
    return _load_encoder(
        chosen, settings.EMBEDDING_WEIGHTS, settings.EMBEDDING_RANDOM_SEED, model_identity(),
        device or str(settings.EMBEDDING_DEVICE),
    )


@functools.lru_cache(maxsize=2)
def _load_encoder(chosen: EncoderFamily, weights: str, seed: int, identity: str, device: str) -> Encoder:
    # Keyed by the identity too: a weights file replaced in place is a different model.
    module, _, function = chosen.load.partition(":")
    encoder = getattr(importlib.import_module(module), function)(weights=weights, seed=seed, identity=identity, device=device)
    if encoder.identity != identity or encoder.dimension != chosen.dimension:
        raise WeightsUnavailable(
            f"{chosen.load} loaded {encoder.identity} ({encoder.dimension} floats) where {identity} "
            f"({chosen.dimension}) was expected."
        )
    return encoder
