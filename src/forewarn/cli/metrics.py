"""`forewarn metrics`: the outcome metrics for a period and segment, as tables or JSON."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from forewarn.cli.options import plural, require_signals

console = Console()


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _dur(v: float | None) -> str:
    if v is None:
        return "–"
    from forewarn.web.routes import _dur as fmt

    return fmt(v)


def _print(m: dict[str, Any]) -> None:
    p = m["period"]
    seg = f", segment {p['segment']}" if p["segment"] else ""
    console.print(f"[bold]Outcome metrics[/] {p['start'][:10]} to {p['end'][:10]} (end exclusive){seg}")
    c, a, r = m["contacts"], m["avoidable_contacts"], m["repeat_contacts"]
    d, tn, lt = m["delivery"], m["time_to_notify"], m["lead_time"]
    t = Table(show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    per = "–" if c["per_1000"] is None else f"{c['per_1000']:.1f}"
    rows = [
        ("customers", f"{c['customers']:,}"),
        ("inbound contacts", f"{c['total']:,}"),
        ("contacts per 1,000 customers", per),
        ("proactive notices sent", f"{m['notices']['sent']:,} to {m['notices']['customers']:,} customers"),
        ("avoidable contacts", f"{a['total']:,} ({_pct(a['share'])})"),
        ("  before the customer was told", f"{a['before_notice']:,}"),
        ("  after the customer was told", f"{a['after_notice']:,}"),
        ("repeat contacts (7 days)", f"{r['total']:,} ({_pct(r['share'])})"),
        (
            "time to notify p50 / p95",
            f"{_dur(tn['p50_s'])} / {_dur(tn['p95_s'])} ({plural(tn['count'], 'incident')})",
        ),
        (
            "lead time p50 / p95",
            f"{_dur(lt['p50_s'])} / {_dur(lt['p95_s'])} ({plural(lt['count'], 'contact')})",
        ),
        ("delivery success", f"{_pct(d['success_rate'])} ({d['by_status']['sent']:,} sent)"),
        ("delivery latency p50 / p95", f"{_dur(d['latency_p50_s'])} / {_dur(d['latency_p95_s'])}"),
    ]
    s = m["surveys"]
    if s["available"]:
        for name in ("csat", "ces"):
            mean = "–" if s[name]["mean"] is None else f"{s[name]['mean']:.2f}"
            rows.append((f"{name.upper()} mean", f"{mean} ({plural(s[name]['answers'], 'answer')})"))
    for row in rows:
        t.add_row(*row)
    console.print(t)
    if m["suppressions"]:
        st = Table(title="Guardrail decisions", header_style="bold")
        for col in ("status", "reason", "messages"):
            st.add_column(col, justify="right" if col == "messages" else "left")
        for x in m["suppressions"]:
            st.add_row(x["status"], x["reason"], f"{x['count']:,}")
        console.print(st)
    if m["control_groups"]:
        ct = Table(title="Notified against control", header_style="bold")
        for col in ("playbook", "group", "customers", "contact rate (95% CI)", "churn", "CES"):
            ct.add_column(col)
        for pb in m["control_groups"]:
            for g in ("notified", "control"):
                x = pb[g]
                lo, hi = x["ci95"]
                ces = x.get("ces", {}).get("mean")
                ct.add_row(
                    pb["playbook"],
                    g,
                    f"{x['customers']:,}",
                    f"{_pct(x['contact_rate'])} ({_pct(lo)}–{_pct(hi)})",
                    _pct(x.get("churn_rate")),
                    "–" if ces is None else f"{ces:.2f}",
                )
            diff = pb["contact_rate_diff"]
            ct.add_row(
                pb["playbook"],
                "difference",
                "",
                f"{_pct(diff['value'])} ({_pct(diff['ci95'][0])}–{_pct(diff['ci95'][1])})",
                "",
                "",
            )
        console.print(ct)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command("metrics")
    def metrics(
        start: str = typer.Option(None, "--from", help="first day, e.g. 2026-03-01 (default: 30 days back)"),
        end: str = typer.Option(None, "--to", help="the day after the last (exclusive)"),
        segment: str = typer.Option(None, "--segment", help="only customers in this segment"),
        bucket: str = typer.Option("day", "--bucket", help="series per day or week"),
        window_days: int = typer.Option(14, "--window-days", help="control-group outcome window"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    ) -> None:
        """Outcome metrics: contacts, notices, avoidable and repeat contacts, time to notify, control."""
        from fastapi import HTTPException

        from forewarn.context import Context
        from forewarn.measure.metrics import outcome_metrics
        from forewarn.state.db import SchemaOutOfDate
        from forewarn.web.routes import resolve_period, signal_reader

        if bucket not in ("day", "week"):
            raise typer.BadParameter("expected day or week", param_hint="--bucket")
        ctx = Context()
        try:
            try:
                ctx.engine  # noqa: B018 - open the store first: a clear message when it is not migrated
                require_signals(ctx)
            except SchemaOutOfDate as e:
                console.print(f"[red]error[/]: {e}")
                raise typer.Exit(1) from None
            try:
                period = resolve_period(ctx, start, end, segment)
            except HTTPException as e:
                raise typer.BadParameter(str(e.detail), param_hint="--from/--to") from None
            m = outcome_metrics(
                ctx.engine, period, signals=signal_reader(ctx), bucket_size=bucket, window_days=window_days
            )
        finally:
            ctx.close()
        if as_json:
            typer.echo(json.dumps(m, indent=2, default=str))
        else:
            _print(m)
