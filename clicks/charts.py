"""The dashboard's charts as geometry for an inline SVG: pure functions, no drawing library.

The template (``admin/clicks/dashboard.html``) draws what these return with classes only, so
the charts pass the site's Content-Security-Policy (no script, no ``style`` attribute) and
take their colours from a static style sheet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

WIDTH, HEIGHT = 720, 240
# Room for the y axis's labels on the left and the x axis's below.
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 36


@dataclass(frozen=True)
class Mark:
    """A value with its interval: a point (or a bar from the axis) and a whisker from low to high."""

    css_class: str
    x: float
    y: float
    low: float
    high: float
    label: str  # its figure in words, the mark's <title>
    bar_width: float = 0  # 0: a point
    baseline: float = 0  # a bar's foot: the axis's y
    horizontal: bool = False  # x is the value and low/high are x positions (the whisker lies flat)

    @property
    def bar_left(self) -> float:
        return round(self.x - self.bar_width / 2, 1)

    @property
    def bar_height(self) -> float:
        return round(self.baseline - self.y, 1)


@dataclass(frozen=True)
class Line:
    css_class: str
    points: str  # "x,y x,y ...", as SVG's polyline reads them


@dataclass
class Chart:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    reference: tuple[float, str] | None = None  # a vertical line: x and what it stands for


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above ``value``: an axis's top."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return step * power
    return 10 * power


def percent(value: float) -> str:
    """A share as people read it: 12.3 %, 0.42 %, 0 %."""
    if value == 0:
        return "0 %"
    digits = 1 if value >= 0.01 else 2
    return f"{value * 100:.{digits}f} %"


def tick(value: float) -> str:
    """An axis's share without needless digits: 0 %, 2.5 %, 25 %."""
    return f"{value * 100:.4g} %"


def _y_axis(chart: Chart, top_value: float) -> Callable[[float], float]:
    """Ticks at fifths of ``top_value``; returns the function from a share to its y."""
    height = chart.bottom - chart.top

    def y_of(value: float) -> float:
        return round(chart.bottom - height * min(value, top_value) / top_value, 1)

    chart.y_ticks = [(y_of(top_value * step / 5), tick(top_value * step / 5)) for step in range(6)]
    return y_of


def _frame(width: int = WIDTH, height: int = HEIGHT) -> Chart:
    return Chart(width=width, height=height, left=LEFT, right=width - RIGHT, top=TOP, bottom=height - BOTTOM)


def rates_over_days(*, days: list[str], series: dict[str, list[tuple[float, float, float, str] | None]]) -> Chart:
    """A line per variant across ``days`` (their labels): for each day a (rate, low, high,
    label) or None when the variant was not shown that day. The variants sit a few pixels
    apart so that their whiskers do not hide each other."""
    chart = _frame()
    values = [value for points in series.values() for value in points if value is not None]
    y_of = _y_axis(chart, nice_ceiling(max((high for _, _, high, _ in values), default=0)))
    step = (chart.right - chart.left) / max(len(days), 1)
    offsets = {name: (index - (len(series) - 1) / 2) * min(6, step / 3) for index, name in enumerate(series)}

    def x_of(index: int, name: str = "") -> float:
        return round(chart.left + step * (index + 0.5) + offsets.get(name, 0), 1)

    # Six or so dates along the axis, the last day always among them.
    every = max(1, math.ceil(len(days) / 6))
    chart.x_ticks = [(x_of(index), day) for index, day in enumerate(days) if (len(days) - 1 - index) % every == 0]
    for name, points in series.items():
        present = [(index, point) for index, point in enumerate(points) if point is not None]
        if len(present) > 1:
            points = " ".join(f"{x_of(index, name)},{y_of(point[0])}" for index, point in present)
            chart.lines.append(Line(css_class=name, points=points))
        for index, (rate, low, high, label) in present:
            chart.marks.append(
                Mark(css_class=name, x=x_of(index, name), y=y_of(rate), low=y_of(low), high=y_of(high), label=label)
            )
    return chart


def rates_by_position(*, rates: list[tuple[int, float, float, float, str]]) -> Chart:
    """A bar per list position: (position, rate, low, high, label)."""
    chart = _frame()
    y_of = _y_axis(chart, nice_ceiling(max((high for _, _, _, high, _ in rates), default=0)))
    step = (chart.right - chart.left) / max(len(rates), 1)
    for index, (position, rate, low, high, label) in enumerate(rates):
        x = round(chart.left + step * (index + 0.5), 1)
        chart.x_ticks.append((x, str(position)))
        chart.marks.append(
            Mark(css_class="position", x=x, y=y_of(rate), low=y_of(low), high=y_of(high), label=label,
                 bar_width=round(step * 0.6, 1), baseline=chart.bottom)
        )
    return chart


def share_against_half(*, share: float, low: float, high: float, label: str) -> Chart:
    """One share on a 0-100 % axis with its interval and a line at one half (no preference)."""
    chart = _frame(height=72)
    width = chart.right - chart.left

    def x_of(value: float) -> float:
        return round(chart.left + width * value, 1)

    chart.x_ticks = [(x_of(step / 4), tick(step / 4)) for step in range(5)]
    middle = round((chart.top + chart.bottom) / 2, 1)
    chart.marks.append(
        Mark(css_class="hybrid", x=x_of(share), y=middle, low=x_of(low), high=x_of(high), label=label, horizontal=True)
    )
    chart.reference = (x_of(0.5), "50 %: no preference")
    return chart
