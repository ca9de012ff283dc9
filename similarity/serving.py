"""Which model's vectors the pages compare, and switching it without an outage.

The configured model (EMBEDDING_WEIGHTS) is what workers embed with; the serving model is
what pages and the API query. They differ during an upgrade: workers fill in the next model's
vectors in the background while visitors keep the current one's neighbours; once every image
has a vector from the next model, one UPDATE switches the site, and the older vectors are
dropped afterwards by a separate step.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Subquery, Value
from django.db.models.functions import Coalesce

from .models import Embedding, ServingModel
from .signals import serving_model_switched
from .weights import model_identity


def serving_identity_expression():
    """The serving identity as SQL (the switched-to model, else the configured one): reading it costs no query."""
    return Coalesce(Subquery(ServingModel.objects.values("identity")[:1]), Value(model_identity()))


def serving_identity() -> str:
    """The serving identity, read now (one query)."""
    row = ServingModel.objects.first()
    return row.identity if row else model_identity()


class SwitchRefused(Exception):
    """The switch would leave images without neighbours; the message says how many."""


def serving_model_switch(*, identity: str, images_total: int, force: bool = False) -> int:
    """Make ``identity`` the one pages compare, atomically. Refuses while images lack its vector.

    ``images_total`` is how many images should have one (the gallery counts them: this app
    does not know its images). Returns how many vectors the identity has.
    """
    covered = Embedding.objects.for_model(identity).count()
    if covered < images_total and not force:
        raise SwitchRefused(
            f"{images_total - covered} of {images_total} image(s) have no {identity} vector yet: compute them "
            "first (manage.py embed_images --stale), or switch anyway with --force."
        )
    with transaction.atomic():
        ServingModel.objects.all().delete()
        ServingModel.objects.create(identity=identity)
        serving_model_switched.send(sender=serving_model_switch, identity=identity)
    return covered


def embeddings_drop(*, identity: str) -> int:
    """Delete one model's vectors (after a switch); never the serving model's. Returns how many."""
    if identity == serving_identity():
        raise SwitchRefused(f"{identity} is the model the site serves: switch to another before dropping it.")
    deleted, _ = Embedding.objects.filter(model_identity=identity).delete()
    return deleted


def identities_in_store() -> dict[str, int]:
    """Vectors stored per model identity."""
    from django.db.models import Count

    rows = Embedding.objects.order_by().values("model_identity").annotate(total=Count("pk"))
    return {row["model_identity"]: row["total"] for row in rows}
