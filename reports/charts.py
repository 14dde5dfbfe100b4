"""The reports page's charts, drawn as SVG on the server: no script, no CDN, readable in any browser and
printable. Each function returns markup built with format_html, so every label is escaped.

Every chart has a <title> per bar or point (the browser shows it on hover) and a text summary in its
`aria-label`; its colours come from classes that reports.css styles for light and dark themes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

__all__ = [
    "Bar",
    "Series",
    "horizontal_bars",
    "integer_axis_maximum",
    "line_chart",
    "nice_ceiling",
    "stacked_columns",
]


@dataclass(frozen=True)
class Series:
    """One named series of a column or line chart: a value per category (None where nothing was measured)."""

    name: str
    css_class: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Bar:
    """One bar of a horizontal bar chart."""

    label: str
    value: float
    text: str  # the value as shown at the bar's end ("12", "34 %")
    css_class: str = ""  # this bar's colour, where it differs from the chart's


def nice_ceiling(value: float) -> float:
    """The axis maximum: the smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _f(value: float) -> str:
    """A coordinate with one decimal (format_html escapes its arguments, so numbers come as text)."""
    return f"{value:.1f}"


def integer_axis_maximum(value: float) -> int:
    """The axis maximum for counts: four equal whole steps of a round size (4 for 0), so that no grid
    line reads "0.5 conversations" and the tallest column fills at least half the height."""
    quarter = max(value, 1) / 4
    power = 10 ** max(0, math.floor(math.log10(quarter))) if quarter >= 1 else 1
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        size = float(step * power)
        if size.is_integer() and quarter <= size:
            return int(4 * size)
    return int(40 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _empty(width: int, height: int, label: str) -> SafeString:
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<text class="chart-empty" x="{}" y="{}" text-anchor="middle">{}</text></svg>',
        width,
        height,
        label,
        width // 2,
        height // 2,
        "Nothing in this period",
    )


def _axis(*, left: int, top: int, width: int, height: int, maximum: float, unit: str) -> SafeString:
    """Four horizontal grid lines with their values on the left."""
    lines = []
    for step in range(5):
        value = maximum * step / 4
        y = top + height - height * step / 4
        lines.append(
            format_html(
                '<line class="chart-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="chart-tick" x="{}" y="{}" text-anchor="end">{}{}</text>',
                left,
                left + width,
                _f(y),
                _f(y),
                left - 6,
                _f(y + 4),
                _number(value),
                unit,
            )
        )
    return mark_safe("".join(lines))  # noqa: S308 - each line was built with format_html


def _category_labels(labels: Sequence[str], *, left: int, slot: float, y: int, every: int) -> SafeString:
    return format_html_join(
        "",
        '<text class="chart-tick" x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (_f(left + slot * index + slot / 2), y, label)
            for index, label in enumerate(labels)
            if index % every == 0 or index == len(labels) - 1
        ),
    )


def _legend(series: Sequence[Series], *, x: int, y: int) -> SafeString:
    items = []
    offset = 0
    for one in series:
        items.append(
            format_html(
                '<rect class="{}" x="{}" y="{}" width="10" height="10" rx="2"/>'
                '<text class="chart-legend" x="{}" y="{}">{}</text>',
                one.css_class,
                x + offset,
                y - 9,
                x + offset + 14,
                y,
                one.name,
            )
        )
        offset += 30 + 6 * len(one.name)
    return mark_safe("".join(items))  # noqa: S308 - each item was built with format_html


# Wide enough that the page (up to 1200 px) shows the charts' text near its own size.
_WIDTH, _HEIGHT = 1100, 260
_LEFT, _TOP, _RIGHT, _BOTTOM = 48, 28, 12, 28


def stacked_columns(*, labels: Sequence[str], series: Sequence[Series], label: str) -> SafeString:
    """Columns per category (a day), each stacked from its series' values, with a legend on top."""
    totals = [sum(one.values[index] or 0 for one in series) for index in range(len(labels))]
    if not labels or not any(totals):
        return _empty(_WIDTH, _HEIGHT, label)
    plot_width, plot_height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    maximum = integer_axis_maximum(max(totals))
    slot = plot_width / len(labels)
    bar = max(1.0, min(slot * 0.72, 48.0))
    shapes = []
    for index, category in enumerate(labels):
        base = 0.0
        for one in series:
            value = one.values[index] or 0
            if value <= 0:
                continue
            height = plot_height * value / maximum
            y = _TOP + plot_height - plot_height * (base + value) / maximum
            shapes.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}: {} {}</title></rect>',
                    one.css_class,
                    _f(_LEFT + slot * index + (slot - bar) / 2),
                    _f(y),
                    _f(bar),
                    _f(height),
                    category,
                    _number(value),
                    one.name,
                )
            )
            base += value
    every = max(1, math.ceil(len(labels) / 12))
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">{}{}{}{}</svg>',
        _WIDTH,
        _HEIGHT,
        label,
        _axis(left=_LEFT, top=_TOP, width=plot_width, height=plot_height, maximum=maximum, unit=""),
        mark_safe("".join(shapes)),  # noqa: S308 - each shape was built with format_html
        _category_labels(labels, left=_LEFT, slot=slot, y=_HEIGHT - 8, every=every),
        _legend(series, x=_LEFT, y=14),
    )


def line_chart(*, labels: Sequence[str], series: Sequence[Series], label: str, unit: str) -> SafeString:
    """A line per series over the categories; a gap where a value is None, a dot on every value."""
    values = [value for one in series for value in one.values if value is not None]
    if not labels or not values:
        return _empty(_WIDTH, _HEIGHT, label)
    plot_width, plot_height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    maximum = nice_ceiling(max(values))
    slot = plot_width / len(labels)
    shapes = []
    for one in series:
        segment: list[str] = []
        points = []
        for index, value in enumerate(one.values):
            if value is None:
                if len(segment) > 1:
                    points.append(" ".join(segment))
                segment = []
                continue
            x = _LEFT + slot * index + slot / 2
            y = _TOP + plot_height - plot_height * value / maximum
            segment.append(f"{x:.1f},{y:.1f}")
            shapes.append(
                format_html(
                    '<circle class="{}" cx="{}" cy="{}" r="2.5"><title>{}: {}{} {}</title></circle>',
                    one.css_class,
                    _f(x),
                    _f(y),
                    labels[index],
                    _number(value),
                    unit,
                    one.name,
                )
            )
        if len(segment) > 1:
            points.append(" ".join(segment))
        shapes.extend(
            format_html('<polyline class="{} chart-line" points="{}"/>', one.css_class, line)
            for line in points
        )
    every = max(1, math.ceil(len(labels) / 12))
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">{}{}{}{}</svg>',
        _WIDTH,
        _HEIGHT,
        label,
        _axis(left=_LEFT, top=_TOP, width=plot_width, height=plot_height, maximum=maximum, unit=unit),
        mark_safe("".join(shapes)),  # noqa: S308 - each shape was built with format_html
        _category_labels(labels, left=_LEFT, slot=slot, y=_HEIGHT - 8, every=every),
        _legend(series, x=_LEFT, y=14),
    )


def horizontal_bars(*, bars: Sequence[Bar], label: str, css_class: str = "chart-a") -> SafeString:
    """One labelled bar per row, longest value widest, its value written after it."""
    width, row, label_width = 440, 26, 200
    height = max(row, row * len(bars)) + 8
    if not bars or not any(bar.value for bar in bars):
        return _empty(width, 80, label)
    maximum = max(bar.value for bar in bars) or 1
    room = width - label_width - 56
    shapes = []
    for index, bar in enumerate(bars):
        y = 4 + row * index
        length = room * bar.value / maximum
        shown = bar.label if len(bar.label) <= 30 else bar.label[:29] + "…"
        shapes.append(
            format_html(
                '<text class="chart-tick" x="{}" y="{}" text-anchor="end">{}<title>{}</title></text>'
                '<rect class="{}" x="{}" y="{}" width="{}" height="{}" rx="2"><title>{}: {}</title></rect>'
                '<text class="chart-value" x="{}" y="{}">{}</text>',
                label_width - 8,
                y + 16,
                shown,
                bar.label,
                bar.css_class or css_class,
                label_width,
                y + 4,
                _f(max(length, 1.0 if bar.value else 0.0)),
                row - 8,
                bar.label,
                bar.text,
                _f(label_width + length + 6),
                y + 16,
                bar.text,
            )
        )
    return format_html(
        '<svg class="chart chart-bars" viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg>',
        width,
        height,
        label,
        mark_safe("".join(shapes)),  # noqa: S308 - each shape was built with format_html
    )
