"""Reads: which list a page shows under an image, and which variant put each item there."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import ranking
from .models import Comparison, PairEvidence, Variant

VARIANTS = ("visual", "hybrid", "interleaved", "ab")


def variant_default() -> str:
    """How a page compares the two lists when it does not ask for one: "interleaved" or "ab"."""
    return settings.CLICKS_COMPARISON


def comparison_of(*, variant: str | None) -> str:
    """How the list a page asked for as ``variant`` is made, for its shown header and links:
    "interleaved" or "ab" (None: the site's default), or "single" for a variant asked for by name."""
    variant = variant or variant_default()
    return variant if variant in (Comparison.INTERLEAVED, Comparison.AB) else Comparison.SINGLE.value


def recommendations_rank(
    *, source_id: int, visual: list[tuple[int, float]], k: int, variant: str
) -> list[tuple[int, str]]:
    """Up to k (target id, team) in display order, team being the variant that put it there.

    ``visual``: the source's visual neighbours, nearest first, with their similarity, at
    least k × CLICKS_CANDIDATE_FACTOR of them where the collection has that many. "visual"
    costs no query; the others one, the source's evidence (``pair_evidence_for``). Targets
    visitors chose from this source that are not in ``visual`` may be returned.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}: one of {', '.join(VARIANTS)}.")
    if variant == "ab":
        variant = ranking.ab_arm(source_id=source_id)
    if variant == Variant.VISUAL:
        return [(target, Variant.VISUAL.value) for target, _ in visual[:k]]
    hybrid = ranking.hybrid_rank(
        visual=visual,
        evidence=pair_evidence_for(source_id=source_id, targets=[target for target, _ in visual]),
        k=k,
        evidence_weight=settings.CLICKS_EVIDENCE_WEIGHT,
        min_choices=settings.CLICKS_MIN_CHOICES,
        link_weight=settings.CLICKS_LINK_WEIGHT,
        min_links=settings.CLICKS_MIN_LINKS,
        explore_below_exposure=settings.CLICKS_EXPLORE_EXPOSURE,
    )
    if variant == Variant.HYBRID:
        return [(target, Variant.HYBRID.value) for target in hybrid]
    # New coin tosses each day (per source), the same all day: a cached page stays valid.
    seed = ranking.stable_hash("interleave", source_id, timezone.now().date().isoformat())
    return ranking.team_draft_interleave(
        visual=[target for target, _ in visual[:k]], hybrid=hybrid, k=k, seed=seed
    )


def pair_evidence_for(*, source_id: int, targets: list[int]) -> dict[int, ranking.PairEvidence]:
    """The evidence for ``source_id``'s pairs with ``targets``, and for any target chosen from
    it at least CLICKS_MIN_CHOICES times or linked to it CLICKS_MIN_LINKS times (the co-chosen
    candidates): one query."""
    rows = PairEvidence.objects.filter(
        Q(target_id__in=targets)
        | Q(choices__gte=settings.CLICKS_MIN_CHOICES)
        | Q(links__gte=settings.CLICKS_MIN_LINKS),
        source_id=source_id,
    ).values_list("target_id", "choices", "exposure", "score", "links")
    return {
        target: ranking.PairEvidence(choices=choices, exposure=exposure, score=score, links=links)
        for target, choices, exposure, score, links in rows
    }
