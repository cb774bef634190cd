"""`forewarn backtest PLAYBOOKS --from D1 --to D2`: replay history through trip wires and playbooks."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import typer
from rich.console import Console

from forewarn.cli.options import stage_progress

console = Console()
err = Console(stderr=True)


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{name}: expected a date such as 2026-01-31, got {value!r}") from None


def backtest_cmd(
    playbooks: list[Path] = typer.Argument(..., help="playbook YAML files or folders"),
    date_from: str | None = typer.Option(
        None, "--from", help="first day (default: the second day of history)"
    ),
    date_to: str | None = typer.Option(None, "--to", help="last day (default: the last day of history)"),
    html: Path | None = typer.Option(None, "--html", help="write an HTML report with plots here"),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON here"),
    truth: Path | None = typer.Option(
        None, "--truth", help="the simulator's ground_truth.jsonl, to score against"
    ),
    run_at: str = typer.Option("09:00", "--run-at", help="time of the daily run (UTC, HH:MM)"),
    horizon: float = typer.Option(30.0, "--horizon", help="days after a message in which an outcome counts"),
    detect_every: int = typer.Option(
        1, "--detect-every", min=1, help="join a condition's findings up to N days apart into one episode"
    ),
) -> None:
    """Replay history day by day and report, per playbook, what would have gone out and how well it aimed."""
    from forewarn.context import Context
    from forewarn.decide.playbooks import PlaybookError, load_playbooks
    from forewarn.measure.backtest import data_from_ctx, run_backtest, signal_kinds

    try:
        pset = load_playbooks(*playbooks)
    except PlaybookError as e:
        err.print(str(e), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if truth is not None and not truth.exists():
        raise typer.BadParameter(f"--truth: expected an existing ground_truth.jsonl, {truth} does not exist")
    try:
        hh, mm = (int(x) for x in run_at.split(":"))
        at = time(hh, mm)
    except ValueError:
        raise typer.BadParameter(f"--run-at: expected HH:MM, got {run_at!r}") from None
    ctx = Context()
    try:
        with console.status("reading history"):
            data = data_from_ctx(ctx, truth, signal_kinds(pset))
        stamps = [f["ts"] for f in data.frames.values() if f.height and "ts" in f.columns]
        if not stamps:
            err.print("no signal history in the store: ingest some first (forewarn ingest DIR)")
            raise typer.Exit(1)
        first = min(s.min() for s in stamps).date()
        last = max(s.max() for s in stamps).date()
        start = _date(date_from, "--from") or date.fromordinal(first.toordinal() + 1)
        end = _date(date_to, "--to") or last
        if end < start:
            raise typer.BadParameter(f"--to: expected a day on or after --from ({start}), got {end}")
        from datetime import timedelta

        import polars as pl

        in_window = sum(
            f.filter((pl.col("ts").dt.date() >= start) & (pl.col("ts").dt.date() <= end)).height
            for f in data.frames.values()
            if f.height and "ts" in f.columns
        )
        if not in_window:
            err.print(
                f"warning: no signals between {start} and {end} (your history runs {first} to {last}); "
                "the backtest below has nothing to count: choose --from/--to inside the history",
                highlight=False,
                soft_wrap=True,
            )
        kinds = {p.when.kind for p in pset.active()}
        with stage_progress(f"backtest {start} .. {end}", len(kinds) + 1) as step:
            report = run_backtest(
                pset,
                data,
                start,
                end,
                settings=ctx.settings,
                run_at=at,
                horizon=timedelta(days=horizon),
                detect_every=detect_every,
                progress=step,
            )
    finally:
        ctx.close()
    console.print(report.to_text(), highlight=False, soft_wrap=True)
    if json_out is not None:
        json_out.write_text(report.to_json())
        console.print(f"JSON report: {json_out}")
    if html is not None:
        html.write_text(report.to_html())
        console.print(f"HTML report: {html}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("backtest")(backtest_cmd)
