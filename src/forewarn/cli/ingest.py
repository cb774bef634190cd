"""`forewarn ingest`: load signal files and customer / service / dependency files into the stores."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from forewarn.cli.options import plural

console = Console()
err_console = Console(stderr=True)

SHOWN_ERRORS = 20


def ingest_cmd(
    paths: list[Path] = typer.Argument(..., help="files (CSV, JSONL, Parquet) or directories of them"),
    kind: Optional[str] = typer.Option(  # noqa: UP045 - typer needs Optional here
        None, "--kind", "-k", help="the kind of every file (default: a 'kind' column, else the file name)"
    ),
    strict: bool = typer.Option(False, "--strict", help="store nothing from a file with any bad row"),
    unknown_customers: Optional[str] = typer.Option(  # noqa: UP045
        None, "--unknown-customers", help="reject or create customers the state store does not know"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Ingest signals (and customers, services, dependencies) from files; exit 1 if any row was rejected.

    Example: forewarn ingest ./sim-out   (entities first, then every signal file in the folder)
    """
    from forewarn.context import Context
    from forewarn.signals.ingest import ingest_paths
    from forewarn.state.db import SchemaOutOfDate

    if unknown_customers not in (None, "reject", "create"):
        raise typer.BadParameter("expected reject or create", param_hint="--unknown-customers")
    ctx = Context()
    try:
        ctx.engine  # noqa: B018 - open (and schema-check) the state store before reading anything
    except SchemaOutOfDate as e:
        err_console.print(f"[red]state store: {e}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        report = ingest_paths(
            ctx,
            paths,
            kind=kind,
            strict=strict,
            progress=progress and console.is_terminal,
            unknown_customers=unknown_customers,  # type: ignore[arg-type]
        )
    except ValueError as e:
        err_console.print(f"[red]{e}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        ctx.close()
    if report.sources and all(s.failed for s in report.sources):  # nothing could be read: say so, briefly
        for s in report.sources:
            err_console.print(
                f"forewarn: {s.source}: {s.note}", markup=False, highlight=False, soft_wrap=True
            )
        raise typer.Exit(1)
    parents = {str(Path(s.source).parent) for s in report.sources}
    short = len(parents) == 1  # one folder: show file names, and the folder once
    table = Table(title="ingested", caption=f"from {parents.pop()}" if short and parents else None)
    for col in ("source", "read as", "new", "duplicate", "rejected"):
        numeric = col in ("new", "duplicate", "rejected")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    notes: list[str] = []
    skipped = 0
    for s in report.sources:
        name = Path(s.source).name if short else s.source
        if s.kind == "-":  # not data (simulator ground truth...): a note only
            notes.append(f"{name}: {s.note}")
            continue
        if s.failed:  # not read at all: no row counts to show, and it says so
            skipped += 1
            table.add_row(name, "skipped", "-", "-", "-", style="red")
        else:
            table.add_row(name, s.kind, f"{s.new:,}", f"{s.duplicate:,}", f"{s.rejected:,}")
        extra = [s.note or ""]
        if s.unknown_customer_rows:
            extra.append(
                f"{plural(s.unknown_customer_rows, 'row')} for customers the state store does not know "
                "rejected (ingest customers first, or --unknown-customers create)"
            )
        if s.created_customers:
            extra.append(f"{plural(s.created_customers, 'unknown customer')} created")
        if s.tickets:
            extra.append(f"{plural(s.tickets, 'ticket')} opened")
        if any(extra):
            notes.append(f"{name}: " + "; ".join(x for x in extra if x))
    totals = (f"{report.new:,}", f"{report.duplicate:,}", f"{report.rejected:,}")
    table.add_row("total", f"{plural(skipped, 'file')} skipped" if skipped else "", *totals, style="bold")
    console.print(table)
    for note in notes:
        console.print(f"  {note}", markup=False, highlight=False, soft_wrap=True)
    errors = report.errors
    if errors:
        shown = min(len(errors), SHOWN_ERRORS)
        err_console.print(f"[red]first {shown} errors ({report.rejected:,} rows rejected in all):[/]")
        for e in errors[:SHOWN_ERRORS]:
            err_console.print(f"  {e}", markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("ingest")(ingest_cmd)
