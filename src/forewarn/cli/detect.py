"""`forewarn detect`: run the enabled trip wires and write their findings to the state store."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from forewarn.cli.options import require_signals, stage_progress, time_option

console = Console()


def detect_cmd(
    as_of: str | None = typer.Option(
        None, "--as-of", help="detect as of this time (default: the latest signal time in the store)"
    ),
    wire: list[str] | None = typer.Option(None, "--wire", help="run only this trip wire (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the run report as JSON"),
) -> None:
    """Run the trip wires at --as-of and write findings (an ongoing condition stays one finding, updated)."""
    from forewarn.context import Context
    from forewarn.detect.registry import TRIP_WIRES
    from forewarn.detect.runner import run_detection

    for name in wire or []:
        if name not in TRIP_WIRES:
            raise typer.BadParameter(f"--wire {name!r} is unknown; expected one of {', '.join(TRIP_WIRES)}")
    at = time_option(as_of)  # a bad option is reported before any store is opened
    ctx = Context()
    try:
        require_signals(ctx)
        names = wire or list(TRIP_WIRES)
        with stage_progress("trip wires", len(names) + 1, enabled=not as_json) as step:
            report = run_detection(ctx, at, wire or None, progress=step)
    finally:
        ctx.close()
    if as_json:
        console.print_json(report.to_json())
        return
    table = Table(title=f"trip wires as of {report.as_of.isoformat()} ({report.seconds:.2f} s)")
    for col in ("wire", "status", "firing", "opened", "updated", "closed", "seconds"):
        table.add_column(col, justify="right" if col not in ("wire", "status") else "left")
    for w in report.wires:
        status = w.status if not w.message else f"{w.status}: {w.message}"
        counts = (w.firing, w.opened, w.updated, w.closed, w.seconds)
        table.add_row(w.name, status, *(str(c) for c in counts))
    console.print(table)
    for w in report.wires:
        for text in w.examples:
            console.print(f"  [bold]{w.name}[/]: {text}")
    if any(w.status == "error" for w in report.wires):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("detect")(detect_cmd)
