"""Charts drawn on the server as inline SVG: no JavaScript, no external assets, no style attributes.

Every function returns markup that is safe to embed (numbers only, labels escaped). Colours
come from the stylesheet (classes and currentColor), so the strict CSP holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""
    css_class: str = ""  # e.g. "fail": the dot is drawn in the failure colour


def _scale(values: Sequence[float], size: float, pad: float) -> list[float]:
    """Map values onto [pad, size - pad]; a flat series sits in the middle."""
    low, high = min(values), max(values)
    if high == low:
        return [size / 2] * len(values)
    span = size - 2 * pad
    return [pad + (v - low) / (high - low) * span for v in values]


def _coordinates(points: Sequence[Point], width: float, height: float, pad: float) -> list[tuple[float, float]]:
    xs = _scale([p.x for p in points], width, pad)
    ys = [height - y for y in _scale([p.y for p in points], height, pad)]
    return list(zip(xs, ys, strict=True))


def sparkline(values: Sequence[float], *, width: int = 120, height: int = 24, title: str = "") -> Markup:
    """A small trend line; empty series render as an empty, labelled box."""
    label = escape(title or "trend")
    if not values:
        return Markup(
            f'<svg class="spark" role="img" aria-label="{label}: no data" width="{width}" height="{height}"></svg>'
        )
    points = [Point(float(i), float(v)) for i, v in enumerate(values)]
    if len(points) == 1:
        points = [Point(0.0, points[0].y), Point(1.0, points[0].y)]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in _coordinates(points, width, height, 2))
    return Markup(
        f'<svg class="spark" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{label}</title>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{coords}"/></svg>'
    )


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 160,
    x_labels: tuple[str, str] = ("", ""),
) -> Markup:
    """A trend chart with its extremes labelled, one hoverable dot per point and its first and last x."""
    label = escape(title)
    if not points:
        return Markup(
            f'<figure class="chart"><figcaption>{label}</figcaption><p class="muted">no data yet</p></figure>'
        )
    coords = _coordinates(points, width, height, 12)
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"{_class(p.css_class)}><title>{escape(p.label)}</title></circle>'
        for (x, y), p in zip(coords, points, strict=True)
    )
    ys = [p.y for p in points]
    extremes = f"min {_short(min(ys))}{escape(unit)} · max {_short(max(ys))}{escape(unit)}"
    first, last = (escape(text) for text in x_labels)
    axis = f'<div class="axis"><span>{first}</span><span>{last}</span></div>' if x_labels != ("", "") else ""
    return Markup(
        f'<figure class="chart"><figcaption>{label} <span class="muted">({extremes})</span></figcaption>'
        f'<svg role="img" aria-label="{label}" viewBox="0 0 {width} {height}">'
        f'<line class="baseline" x1="0" y1="{height - 1}" x2="{width}" y2="{height - 1}"/>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{path}"/>{dots}</svg>{axis}</figure>'
    )


def _class(name: str) -> str:
    return f' class="{escape(name)}"' if name else ""


def _short(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"
