"""Charts as inline SVG, drawn on the server: no JavaScript, scale with the page, readable by screen readers.

Each chart carries a ``<title>`` and ``<desc>`` (named by ``aria-labelledby``); the page shows the same
numbers in a table beside it for anyone who cannot see the chart.

>>> svg = line_chart([("2026-03-01", 1.0), ("2026-03-02", 3.0)], title="Contacts per 1,000")
>>> svg.startswith("<svg") and "Contacts per 1,000" in svg and "<polyline" in svg
True
>>> "No data" in bar_chart([], title="Notices")
True
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 12, 36
_ids = itertools.count(1)


def _nice_max(v: float) -> float:
    """A round number at or above ``v`` for the top of the axis."""
    if v <= 0:
        return 1.0
    mag = 10 ** (len(str(int(v))) - 1) if v >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= v:
            return step * mag
    return 10 * mag


def _fmt(v: float) -> str:
    """12.5 stays 12.5 on an axis; whole numbers lose their decimals."""
    if v == int(v):
        return f"{v:,.0f}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"


def _frame(title: str, desc: str, body: str, ymax: float, labels: Sequence[str]) -> Markup:
    n = next(_ids)
    tid, did = f"chart-t{n}", f"chart-d{n}"
    plot_h = H - PAD_T - PAD_B
    grid = []
    for i in range(5):
        y = PAD_T + plot_h * i / 4
        grid.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
            f"{_fmt(ymax * (4 - i) / 4)}</text>"
        )
    ticks = []
    if labels:
        step = max(1, len(labels) // 6)
        for i in range(0, len(labels), step):
            x = _x(i, len(labels))
            ticks.append(
                f'<text x="{x:.1f}" y="{H - 12}" class="axis" text-anchor="middle">{escape(labels[i][5:])}</text>'  # noqa: E501
            )
    return Markup(
        f'<svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="{tid} {did}" class="chart" '
        f'preserveAspectRatio="none" focusable="false">'
        f'<title id="{tid}">{escape(title)}</title><desc id="{did}">{escape(desc)}</desc>'
        f"{''.join(grid)}{''.join(ticks)}{body}</svg>"
    )


def _x(i: int, n: int) -> float:
    plot_w = W - PAD_L - PAD_R
    return PAD_L + (plot_w * (i + 0.5) / n if n else 0)


def _y(v: float, ymax: float) -> float:
    plot_h = H - PAD_T - PAD_B
    return PAD_T + plot_h * (1 - v / ymax)


def _empty(title: str) -> Markup:
    return Markup(
        f'<svg viewBox="0 0 {W} 60" role="img" aria-label="{escape(title)}: no data" class="chart chart-empty">'  # noqa: E501
        f'<text x="{W / 2}" y="35" text-anchor="middle" class="axis">No data in this period</text></svg>'
    )


def _describe(title: str, points: Sequence[tuple[str, float]]) -> str:
    hi = max(points, key=lambda p: p[1])
    return f"{title}: {len(points)} points from {points[0][0]} to {points[-1][0]}; highest {_fmt(hi[1])} on {hi[0]}."  # noqa: E501


def line_chart(points: Sequence[tuple[str, float]], *, title: str) -> Markup:
    """A line over ``(label, value)`` points (labels are ISO dates)."""
    if not points:
        return _empty(title)
    ymax = _nice_max(max(v for _, v in points))
    n = len(points)
    coords = " ".join(f"{_x(i, n):.1f},{_y(v, ymax):.1f}" for i, (_, v) in enumerate(points))
    dots = "".join(
        f'<circle cx="{_x(i, n):.1f}" cy="{_y(v, ymax):.1f}" r="3" class="dot"><title>{escape(lab)}: {_fmt(v)}</title></circle>'  # noqa: E501
        for i, (lab, v) in enumerate(points)
    )
    body = f'<polyline points="{coords}" class="line" fill="none"/>{dots}'
    return _frame(title, _describe(title, points), body, ymax, [p[0] for p in points])


def bar_chart(points: Sequence[tuple[str, float]], *, title: str) -> Markup:
    """Bars over ``(label, value)`` points."""
    if not points:
        return _empty(title)
    ymax = _nice_max(max(v for _, v in points))
    n = len(points)
    plot_w = W - PAD_L - PAD_R
    bw = max(1.0, plot_w / n * 0.7)
    bars = "".join(
        f'<rect x="{_x(i, n) - bw / 2:.1f}" y="{_y(v, ymax):.1f}" width="{bw:.1f}" '
        f'height="{_y(0, ymax) - _y(v, ymax):.1f}" class="bar"><title>{escape(lab)}: {_fmt(v)}</title></rect>'
        for i, (lab, v) in enumerate(points)
    )
    return _frame(title, _describe(title, points), bars, ymax, [p[0] for p in points])
