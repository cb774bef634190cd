"""Rendering a backtest report: a terminal table, and a self-contained HTML page with inline SVG plots.

No JavaScript and no external assets: the HTML opens offline and can be attached to a review.

>>> svg = bar_chart([("a", 3), ("b", 1)], title="t")
>>> svg.startswith("<svg") and "<rect" in svg
True
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from forewarn.measure.backtest import BacktestReport, PlaybookResult


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _days(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} d"


def summary_rows(report: BacktestReport) -> list[list[str]]:
    rows = []
    for p in report.playbooks:
        stopped = ", ".join(f"{k} {v}" for k, v in sorted(p.suppressed_by.items(), key=lambda kv: -kv[1]))
        rows.append(
            [
                p.name,
                p.mode,
                str(p.messages),
                str(p.control),
                f"{p.tasks}/{p.webhooks}",
                f"{p.rate_p50:g} / {p.rate_p95:g} / {p.rate_max}",
                stopped or "-",
                _pct(p.precision)
                + (f" ({_pct(p.precision_truth)})" if p.precision_truth is not None else ""),
                _pct(p.recall) + (f" ({_pct(p.recall_truth)})" if p.recall_truth is not None else ""),
                _days(p.lead_time_days)
                + (f" ({_days(p.lead_time_truth_days)})" if p.lead_time_truth_days is not None else ""),
            ]
        )
    return rows


HEADERS = [
    "playbook",
    "mode",
    "messages",
    "control",
    "tasks/webhooks",
    "per cust-week p50/p95/max",
    "stopped by guardrail",
    "precision (truth)",
    "recall (truth)",
    "lead time (truth)",
]


def render_text(report: BacktestReport, width: int = 180) -> str:
    """The report as a terminal table (what ``forewarn backtest`` prints)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    table = Table(
        *HEADERS,
        title=f"Backtest {report.start} .. {report.end} ({report.days} days, {report.customers} customers)",
    )
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    o = report.overall
    console.print(
        f"All playbooks together: {o.get('messages', 0)} messages to {o.get('customers', 0)} customers; "
        f"per customer-week p50 {o.get('rate_p50', 0):g}, p95 {o.get('rate_p95', 0):g}, "
        f"max {o.get('rate_max', 0)}"
    )
    console.print(
        f"Precision: targeted customers with an inbound contact on the topic within "
        f"{report.horizon_days:g} days (truth: a true problem of that kind)."
    )
    for n in report.notes:
        console.print(f"note: {n}")
    console.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in report.timings.items()))
    return buf.getvalue()


# ---- SVG ----


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    width: int = 520,
    height: int = 160,
    color: str = "#3b6ea5",
) -> str:
    """A labelled vertical bar chart as an inline SVG string."""
    pad_l, pad_b, pad_t = 36, 28, 22
    n = max(len(bars), 1)
    top = max([v for _, v in bars] + [1])
    inner_w, inner_h = width - pad_l - 8, height - pad_b - pad_t
    bw = inner_w / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" style="font:11px sans-serif">',
        f'<text x="{pad_l}" y="14" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 8}" y2="{height - pad_b}" stroke="#999"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{top:g}</text>',
        f'<text x="{pad_l - 4}" y="{height - pad_b}" text-anchor="end">0</text>',
    ]
    step = max(1, n // 8)
    for i, (label, v) in enumerate(bars):
        h = inner_h * v / top
        x = pad_l + i * bw
        parts.append(
            f'<rect x="{x + bw * 0.1:.1f}" y="{height - pad_b - h:.1f}" width="{max(bw * 0.8, 1):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{escape(str(label))}: {v:g}</title></rect>'
        )
        if i % step == 0:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{height - pad_b + 14}" text-anchor="middle">'
                f"{escape(str(label))}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, title: str, bins: int = 15) -> str:
    if not values:
        return bar_chart([], title=title + " (none)")
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return bar_chart(
        [(f"{lo + i * width:.0f}", c) for i, c in enumerate(counts)], title=title, color="#5a9e6f"
    )


def _playbook_section(p: PlaybookResult) -> str:
    weekly = bar_chart([(w[5:], n) for w, n in p.weekly], title=f"{p.name}: messages per week")
    stopped = bar_chart(
        sorted(p.suppressed_by.items(), key=lambda kv: -kv[1]), title="stopped by guardrail", color="#b5533c"
    )
    leads = histogram(p.lead_times, title="lead time before first contact on the topic (days)")
    facts = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
        for k, v in (
            ("mode", p.mode),
            ("trip wire / topic", f"{p.kind} / {p.topic}"),
            ("decisions", str(p.decisions)),
            ("statuses", ", ".join(f"{k} {v}" for k, v in sorted(p.statuses.items()))),
            ("customers targeted", str(p.customers_targeted)),
            ("precision (truth)", f"{_pct(p.precision)} ({_pct(p.precision_truth)})"),
            ("recall (truth)", f"{_pct(p.recall)} ({_pct(p.recall_truth)})"),
            ("median lead time (truth)", f"{_days(p.lead_time_days)} ({_days(p.lead_time_truth_days)})"),
        )
    )
    return (
        f'<section><h2>{escape(p.name)}</h2><table class="facts">{facts}</table>'
        f'<div class="plots">{weekly}{stopped}{leads}</div></section>'
    )


def render_html(report: BacktestReport) -> str:
    """A self-contained HTML page: the summary table and, per playbook, its plots."""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in summary_rows(report)
    )
    o = report.overall
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    sections = "".join(_playbook_section(p) for p in report.playbooks)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forewarn backtest {report.start} .. {report.end}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:.3rem .5rem;text-align:left}} th{{background:#f4f4f4}}
section{{margin-top:2rem}} .plots svg{{margin:.5rem 1rem .5rem 0;border:1px solid #eee}}
.facts th{{width:14rem}}
</style></head><body>
<h1>Backtest {report.start} .. {report.end}</h1>
<p>{report.days} days, {report.customers} customers. All playbooks together: {o.get("messages", 0)}
messages to {o.get("customers", 0)} customers; per customer-week p50 {o.get("rate_p50", 0):g},
p95 {o.get("rate_p95", 0):g}, max {o.get("rate_max", 0)}. Precision counts targeted customers with an
inbound contact on the topic within {report.horizon_days:g} days; in brackets, against the simulator's
ground truth.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{notes}</ul>
{sections}
</body></html>
"""
