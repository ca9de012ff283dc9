"""Reads for the admin's dashboard of visitors' choices: every figure aggregated in SQL from
``PairDay``, a fixed number of queries whatever the period or the traffic.

"Choices per impression" counts per item shown: a variant's choices over the times an item it
put in a list was shown. That measure is the same for every comparison (an interleaved list
holds items of both variants) and is a proportion, so it gets a binomial (Wilson) interval.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace

from django.db.models import Sum
from django.utils import timezone

from . import charts, proportions
from .models import Comparison, PairDay, Variant

PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30
# Rows of the "most chosen" and "never chosen" tables.
TABLE_ROWS = 10


@dataclass(frozen=True)
class Rate:
    """Choices out of impressions, with the Wilson 95 % interval of their ratio.

    Choices can outnumber the impressions recorded for them (an impression dropped while
    Redis was away, a link followed from a page kept elsewhere); the ratio is capped at 1.
    """

    choices: int
    impressions: int

    @property
    def rate(self) -> float:
        return min(self.choices, self.impressions) / self.impressions if self.impressions else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return proportions.wilson_interval(successes=min(self.choices, self.impressions), trials=self.impressions)

    def describe(self) -> str:
        low, high = self.interval
        return (
            f"{charts.percent(self.rate)} ({self.choices} of {self.impressions}; "
            f"95 % interval {charts.percent(low)} to {charts.percent(high)})"
        )


@dataclass(frozen=True)
class InterleavingResult:
    """Choices from interleaved lists, credited to the variant that put the chosen item there."""

    hybrid: int
    visual: int

    @property
    def choices(self) -> int:
        return self.hybrid + self.visual

    @property
    def share(self) -> float:
        """The hybrid list's win rate: its share of the credited choices."""
        return self.hybrid / self.choices if self.choices else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return proportions.wilson_interval(successes=self.hybrid, trials=self.choices)

    @property
    def p_value(self) -> float:
        """Against no preference (one half), two-sided, exact."""
        return proportions.binomial_test_two_sided(successes=self.hybrid, trials=self.choices)

    def p_value_text(self) -> str:
        return "p < 0.0001" if self.p_value < 0.0001 else f"p = {self.p_value:.4f}"

    def describe(self) -> str:
        if not self.choices:
            return "No choice from an interleaved list in this period."
        low, high = self.interval
        return (
            f"The hybrid list's items took {self.hybrid} of the {self.choices} choices from interleaved lists: "
            f"{charts.percent(self.share)} (95 % interval {charts.percent(low)} to {charts.percent(high)}); "
            f"two-sided binomial test against 50 %: {self.p_value_text()}."
        )


@dataclass(frozen=True)
class PairRow:
    source_id: int
    target_id: int
    choices: int
    impressions: int
    source: object | None = None  # the images, once loaded (None: deleted meanwhile)
    target: object | None = None


@dataclass(frozen=True)
class UnchosenRow:
    target_id: int
    impressions: int
    target: object | None = None


@dataclass
class Dashboard:
    days: int
    comparison: str  # "" for every comparison
    since: datetime.date
    until: datetime.date
    daily: list[tuple[datetime.date, dict[str, Rate]]]
    by_variant: dict[str, Rate]
    interleaving: InterleavingResult
    by_position: list[tuple[int, Rate]]
    most_chosen: list[PairRow]
    never_chosen: list[UnchosenRow]
    charts: dict[str, charts.Chart] = field(default_factory=dict)


def period_requested(*, days: str | None) -> int:
    """The period a dashboard URL asks for (?days=7, 30 or 90); anything else: the default."""
    return int(days) if days in {str(period) for period in PERIODS} else DEFAULT_PERIOD


def comparison_requested(*, comparison: str | None) -> str:
    """The comparison a dashboard URL keeps to (?comparison=interleaved, ab or single); "" for all."""
    return comparison if comparison in Comparison.values else ""


def _rows(*, since: datetime.date, comparison: str = ""):
    rows = PairDay.objects.filter(day__gte=since)
    return rows.filter(comparison=comparison) if comparison else rows


def choice_rates_by_day(*, since: datetime.date, comparison: str = "") -> dict[tuple[datetime.date, str], Rate]:
    """{(day, variant): Rate} for the days from ``since`` that have any: one query."""
    rows = (
        _rows(since=since, comparison=comparison)
        .values_list("day", "variant")
        .annotate(chosen=Sum("choices"), shown=Sum("impressions"))
        .order_by()
    )
    return {(day, variant): Rate(choices=chosen, impressions=shown) for day, variant, chosen, shown in rows}


def interleaving_result(*, since: datetime.date) -> InterleavingResult:
    """The choices from interleaved lists since ``since``, by the variant credited: one query."""
    rows = dict(
        _rows(since=since, comparison=Comparison.INTERLEAVED)
        .values_list("variant")
        .annotate(chosen=Sum("choices"))
        .order_by()
    )
    return InterleavingResult(hybrid=rows.get(Variant.HYBRID, 0), visual=rows.get(Variant.VISUAL, 0))


def choice_rates_by_position(*, since: datetime.date, comparison: str = "") -> list[tuple[int, Rate]]:
    """(position, Rate) for every position shown since ``since``, from 1: one query."""
    rows = (
        _rows(since=since, comparison=comparison)
        .values_list("position")
        .annotate(chosen=Sum("choices"), shown=Sum("impressions"))
        .order_by("position")
    )
    return [(position, Rate(choices=chosen, impressions=shown)) for position, chosen, shown in rows]


def pairs_most_chosen(*, since: datetime.date, comparison: str = "", limit: int = TABLE_ROWS) -> list[PairRow]:
    """The (source, target) pairs chosen most often since ``since``: one query."""
    rows = (
        _rows(since=since, comparison=comparison)
        .values_list("source_id", "target_id")
        .annotate(chosen=Sum("choices"), shown=Sum("impressions"))
        .filter(chosen__gt=0)
        .order_by("-chosen", "shown", "source_id", "target_id")[:limit]
    )
    return [PairRow(source_id=s, target_id=t, choices=c, impressions=i) for s, t, c, i in rows]


def targets_never_chosen(*, since: datetime.date, comparison: str = "", limit: int = TABLE_ROWS) -> list[UnchosenRow]:
    """The images shown most often in lists since ``since`` that no visitor chose from any: one query."""
    rows = (
        _rows(since=since, comparison=comparison)
        .values_list("target_id")
        .annotate(chosen=Sum("choices"), shown=Sum("impressions"))
        .filter(chosen=0, shown__gt=0)
        .order_by("-shown", "target_id")[:limit]
    )
    return [UnchosenRow(target_id=target, impressions=shown) for target, _, shown in rows]


def images_with_thumbnails(*, image_ids: set[int]) -> dict[int, object]:
    """{id: image} with thumbnails loaded: two queries however many. The image model is reached
    through the foreign key, as clicks imports no gallery module."""
    if not image_ids:
        return {}
    image_model = PairDay._meta.get_field("target").related_model
    return {image.pk: image for image in image_model.objects.filter(pk__in=image_ids).with_renditions()}


def dashboard_get(*, days: int, comparison: str = "", today: datetime.date | None = None) -> Dashboard:
    """Every figure of the dashboard over the last ``days`` days (today's included, UTC), for
    lists of one comparison or, with "", of all: seven queries."""
    until = today or timezone.now().date()
    since = until - datetime.timedelta(days=days - 1)
    by_day = choice_rates_by_day(since=since, comparison=comparison)
    variants = [Variant.VISUAL.value, Variant.HYBRID.value]
    daily = [
        (day, {variant: by_day[(day, variant)] for variant in variants if (day, variant) in by_day})
        for day in (since + datetime.timedelta(days=offset) for offset in range(days))
    ]
    by_variant = {
        variant: Rate(
            choices=sum(rate.choices for (_, name), rate in by_day.items() if name == variant),
            impressions=sum(rate.impressions for (_, name), rate in by_day.items() if name == variant),
        )
        for variant in variants
    }
    most_chosen = pairs_most_chosen(since=since, comparison=comparison)
    never_chosen = targets_never_chosen(since=since, comparison=comparison)
    images = images_with_thumbnails(
        image_ids={row.source_id for row in most_chosen}
        | {row.target_id for row in most_chosen}
        | {row.target_id for row in never_chosen}
    )
    dashboard = Dashboard(
        days=days,
        comparison=comparison,
        since=since,
        until=until,
        daily=daily,
        by_variant=by_variant,
        interleaving=interleaving_result(since=since),
        by_position=choice_rates_by_position(since=since, comparison=comparison),
        most_chosen=[
            replace(row, source=images.get(row.source_id), target=images.get(row.target_id)) for row in most_chosen
        ],
        never_chosen=[replace(row, target=images.get(row.target_id)) for row in never_chosen],
    )
    dashboard.charts = _charts(dashboard)
    return dashboard


def _charts(dashboard: Dashboard) -> dict[str, charts.Chart]:
    def point(rate: Rate | None):
        return None if rate is None or not rate.impressions else (rate.rate, *rate.interval, rate.describe())

    drawn = {
        "daily": charts.rates_over_days(
            days=[f"{day.day} {day:%b}" for day, _ in dashboard.daily],
            series={
                variant: [point(rates.get(variant)) for _, rates in dashboard.daily]
                for variant in (Variant.VISUAL.value, Variant.HYBRID.value)
            },
        ),
        "position": charts.rates_by_position(
            rates=[(position, rate.rate, *rate.interval, f"position {position}: {rate.describe()}")
                   for position, rate in dashboard.by_position]
        ),
    }
    result = dashboard.interleaving
    if result.choices:
        low, high = result.interval
        drawn["interleaving"] = charts.share_against_half(
            share=result.share, low=low, high=high,
            label=f"hybrid {charts.percent(result.share)} of {result.choices} choices",
        )
    return drawn
