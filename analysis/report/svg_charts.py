"""The HTML report's two charts as inline SVG: region shares with their intervals, and a region's share across
versions.

Why not plotly here (the dashboard keeps it): the report is one file attached to a ticket, and plotly.js inlined
made every report 4.8 MB for two small charts; these are a few kilobytes, draw without JavaScript, and open
offline in any browser or mail client. Every label is a user's name and goes through `html.escape`.
"""
from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 320, 48, 90, 16
LABEL_CHARS = 26  # a longer name is cut with an ellipsis (the full name is in the tables below the chart)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _nice_top(values: list[float]) -> float:
    """The axis' top: the largest value rounded up to a multiple of 20% (5% below 0.2), so its quarters read
    as round numbers."""
    peak = max([0.05, *values])
    step = 0.2 if peak > 0.2 else 0.05
    return min(1.0, math.ceil(peak / step - 1e-9) * step) if peak <= 1 else peak


def _y(value: float, top: float) -> float:
    """Pixel row of `value` on a 0..top axis."""
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - min(max(value, 0.0), top) / top)


def _axis(top: float, label: str) -> list[str]:
    parts = [f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{HEIGHT - BOTTOM}' stroke='#999'/>",
             f"<line x1='{LEFT}' y1='{HEIGHT - BOTTOM}' x2='{WIDTH - 8}' y2='{HEIGHT - BOTTOM}' stroke='#999'/>",
             f"<text x='12' y='{(HEIGHT - BOTTOM + TOP) / 2:.0f}' font-size='11' fill='#555' "
             f"transform='rotate(-90 12 {(HEIGHT - BOTTOM + TOP) / 2:.0f})' text-anchor='middle'>{escape(label)}</text>"]
    for k in range(5):
        value = top * k / 4
        y = _y(value, top)
        parts.append(f"<line x1='{LEFT - 4}' y1='{y:.1f}' x2='{WIDTH - 8}' y2='{y:.1f}' stroke='#eee'/>"
                     f"<text x='{LEFT - 6}' y='{y + 4:.1f}' font-size='10' fill='#555' text-anchor='end'>"
                     f"{value:.0%}</text>")
    return parts


def _svg(parts: list[str], legend: list[tuple[str, str]]) -> str:
    keys = "".join(f"<span style='color:{colour}'>&#9632;</span> {escape(name)} &nbsp; " for name, colour in legend)
    return (f"<figure class='chart'><svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
            f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img'>{''.join(parts)}</svg>"
            f"<figcaption class='muted'>{keys}</figcaption></figure>")


def _label(x: float, text: str) -> str:
    text = text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "\u2026"
    return (f"<text x='{x:.1f}' y='{HEIGHT - BOTTOM + 14}' font-size='11' text-anchor='end' "
            f"transform='rotate(-30 {x:.1f} {HEIGHT - BOTTOM + 14})'>{escape(text)}</text>")


def region_bars(names: list[str], mass: list[float], low: list[float], high: list[float],
                area: list[float]) -> str:
    """Per region: its mean share of the saliency (bar) with its interval (whisker) and its share of the image
    (grey tick): a bar far above its tick is more attention than the region's size explains."""
    top = _nice_top([*high, *area])
    step = (WIDTH - LEFT - 16) / max(len(names), 1)
    parts = _axis(top, "share of saliency / of the image")
    for k, name in enumerate(names):
        x0 = LEFT + 8 + k * step
        width = step * 0.6
        y = _y(mass[k], top)
        parts.append(f"<rect x='{x0:.1f}' y='{y:.1f}' width='{width:.1f}' height='{HEIGHT - BOTTOM - y:.1f}' "
                     f"fill='{PALETTE[0]}'><title>{escape(name)}: {mass[k]:.1%} [{low[k]:.1%}, {high[k]:.1%}]</title>"
                     "</rect>")
        centre = x0 + width / 2
        parts.append(f"<line x1='{centre:.1f}' y1='{_y(low[k], top):.1f}' x2='{centre:.1f}' "
                     f"y2='{_y(high[k], top):.1f}' stroke='#222'/>")
        tick = _y(area[k], top)
        parts.append(f"<line x1='{x0 - 3:.1f}' y1='{tick:.1f}' x2='{x0 + width + 3:.1f}' y2='{tick:.1f}' "
                     f"stroke='#777' stroke-width='2'/>")
        parts.append(_label(centre, name))
    return _svg(parts, [("saliency mass (95% interval)", PALETTE[0]), ("share of the image", "#777")])


def version_lines(runs: list[str], series: dict[str, list[tuple[float, float, float] | None]]) -> str:
    """Per region, its mean share of the saliency in each version (a point with its interval), joined by a line."""
    values = [v for points in series.values() for point in points if point for v in point]
    top = _nice_top(values)
    first = LEFT + 110  # room for the first version's slanted name, which ends at its point
    step = (WIDTH - first - 30) / max(len(runs) - 1, 1)
    xs = [first + k * step for k in range(len(runs))]
    parts = _axis(top, "share of saliency")
    legend = []
    for j, (region, points) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        legend.append((region, colour))
        drawn = [(xs[k], p) for k, p in enumerate(points) if p is not None]
        path = " ".join(f"{x:.1f},{_y(p[0], top):.1f}" for x, p in drawn)
        parts.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>")
        for x, (mean, low, high) in drawn:
            parts.append(f"<line x1='{x:.1f}' y1='{_y(low, top):.1f}' x2='{x:.1f}' y2='{_y(high, top):.1f}' "
                         f"stroke='{colour}'/><circle cx='{x:.1f}' cy='{_y(mean, top):.1f}' r='3.5' fill='{colour}'>"
                         f"<title>{escape(region)}: {mean:.1%} [{low:.1%}, {high:.1%}]</title></circle>")
    parts.extend(_label(x, run) for x, run in zip(xs, runs))
    return _svg(parts, legend)
