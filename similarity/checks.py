"""Say early, and plainly, when the configured weights cannot be loaded.

``manage.py check`` (and so migrate) warns; a Celery worker refuses to start with the same
instructions (``similarity.worker``), instead of failing image after image.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from .encoders.registry import configured_family
from .weights import (
    WeightsUnavailable,
    imagenet_weights_cached,
    imagenet_weights_path,
    imagenet_weights_url,
    model_identity,
)


def weights_problem() -> str | None:
    """Why the configured weights cannot be used, or None. Never imports torch."""
    try:
        family = configured_family()
    except WeightsUnavailable as error:  # EMBEDDING_ENCODER names no known encoder
        return str(error)
    if family.uses_weights and settings.EMBEDDING_WEIGHTS == "imagenet" and not imagenet_weights_cached():
        return (
            f"The ImageNet weights for {family.name} are not in the torch hub cache ({imagenet_weights_path()}). "
            f"Workers download them when online; offline, copy {imagenet_weights_url()} there, or set "
            "EMBEDDING_WEIGHTS to a saved state dict, or EMBEDDING_WEIGHTS=random for a demo."
        )
    try:
        model_identity()
    except WeightsUnavailable as error:
        return str(error)
    return None


def check_embedding_weights(app_configs, **kwargs):
    problem = weights_problem()
    return [checks.Warning(problem, id="similarity.W001")] if problem else []

