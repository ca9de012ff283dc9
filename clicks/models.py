"""What visitors were shown and what they chose, aggregated: nothing about who they were.

No row, column or key here names, counts or could single out a visitor: no cookie, address,
user agent or session. ``PairDay`` holds daily counts per (source, target, comparison, variant,
position);
``PairEvidence`` the smoothed, position-corrected evidence the hybrid lists rank with.
"""

from __future__ import annotations

from django.db import models


class Variant(models.TextChoices):
    VISUAL = "visual", "visual neighbours only"
    HYBRID = "hybrid", "visual neighbours re-ranked by visitors' choices"


class Comparison(models.TextChoices):
    """How the list an item was in was made: the two variants' lists are compared by interleaving
    or A/B only when a page did not ask for one variant by name."""

    INTERLEAVED = "interleaved", "team-draft interleaving of the two lists"
    AB = "ab", "one list or the other per source image (A/B)"
    SINGLE = "single", "one list, asked for by name"


class PairDay(models.Model):
    """On ``day``, how often ``target`` was shown at ``position`` (from 1) in ``source``'s list,
    made by ``comparison`` and put there by ``variant``, and how often a visitor followed that link."""

    day = models.DateField()
    source = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="+", db_index=False)
    target = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="+")
    # Rows from before the comparison was recorded are "single".
    comparison = models.CharField(max_length=11, choices=Comparison.choices, default=Comparison.SINGLE)
    variant = models.CharField(max_length=8, choices=Variant.choices)
    position = models.PositiveSmallIntegerField()
    impressions = models.PositiveIntegerField(default=0)
    choices = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "target", "comparison", "variant", "position", "day"],
                name="clicks_pairday_unique",
            ),
        ]
        indexes = [models.Index(fields=["day"], name="clicks_pairday_day")]
        # The admin shows the rows as the dashboard of visitors' choices (clicks.admin).
        verbose_name = "daily counts of a pair"
        verbose_name_plural = "visitors' choices"


class PairEvidence(models.Model):
    """For one (source, target) pair, over the retained days: choices, exposure (impressions
    weighted by how likely a visitor is to look at their position) and the smoothed score the
    hybrid list ranks by, and its links (shared co-chosen pictures). Rebuilt periodically
    from ``PairDay``; a pair with links but no counts of its own has a row too."""

    source = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="+", db_index=False)
    target = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="+")
    choices = models.PositiveIntegerField(default=0)
    exposure = models.FloatField(default=0)
    score = models.FloatField(default=0)
    # Pictures chosen together with both: how many images are joined by visitors' choices
    # (either way) to the source and to the target alike. Two steps through the choices find
    # what the visual search misses and no list has shown yet.
    links = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "target"], name="clicks_pairevidence_unique")]
