"""`forewarn run`: one pass of the live loop (detect, incidents, link, decide, digests), or one every --every."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from forewarn.cli.options import UserError, require_signals, time_option
from forewarn.config import get_settings
from forewarn.cycle import STAGES, CycleReport, CycleRunner, run_cycle
from forewarn.timeutil import parse_duration

console = Console()


def print_report(report: CycleReport, as_json: bool = False) -> None:
    """The pass as a table (or one JSON line per pass with ``as_json``)."""
    if as_json:
        print(json.dumps(report.to_dict()), flush=True)
        return
    table = Table(title=f"forewarn pass at {report.now.isoformat()} ({report.seconds:.2f} s)")
    for col in ("stage", "status", "what it did", "seconds"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for s in report.stages:
        table.add_row(s.name, s.status, s.summary, f"{s.seconds:.2f}")
    console.print(table)


def run_cmd(
    playbooks: Path | None = typer.Argument(
        None, help="playbook YAML file or folder (default: FOREWARN_PLAYBOOKS_PATH, else .forewarn/playbooks)"
    ),
    playbooks_opt: Path | None = typer.Option(None, "--playbooks", help="the same as the argument"),
    every: str | None = typer.Option(
        None, "--every", help="repeat the pass at this interval (15m, 1h, ...) until interrupted"
    ),
    now: str | None = typer.Option(None, "--now", help="run one pass as of this time (default: the clock)"),
    stage: list[str] | None = typer.Option(
        None, "--stage", help=f"run only this stage ({', '.join(STAGES)})"
    ),
    as_json: bool = typer.Option(False, "--json", help="print each pass as one JSON line"),
) -> None:
    """Run the live loop once: trip wires, incidents from signals, link contacts, playbooks, digests."""
    from forewarn.context import Context

    stages = tuple(stage or STAGES)
    for name in stages:
        if name not in STAGES:
            raise typer.BadParameter(f"--stage {name!r} is unknown; expected one of {', '.join(STAGES)}")
    if every is not None and now is not None:
        raise typer.BadParameter("--now replays one pass; it cannot be combined with --every")
    at = time_option(now)  # a bad option is reported before any store is opened
    settings = get_settings()
    path = playbooks or playbooks_opt
    if path is not None:
        if not path.exists():
            raise UserError(f"{path}: no such playbook file or folder (copy examples/playbooks to start)")
        settings = settings.model_copy(update={"playbooks_path": path})
    ctx = Context(settings)
    try:
        if every is None:
            require_signals(ctx)
            report = run_cycle(ctx, at, stages)
            print_report(report, as_json)
            if not report.ok:
                raise typer.Exit(1)
            return
        try:
            interval = parse_duration(every)
        except ValueError as e:
            raise typer.BadParameter(f"--every: {e}") from None
        runner = CycleRunner(ctx, interval, on_report=lambda r: print_report(r, as_json), stages=stages)
        stop = threading.Event()
        try:
            runner.run_forever(stop)
        except KeyboardInterrupt:
            stop.set()
    finally:
        ctx.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("run")(run_cmd)
