"""`forewarn customers`: a customer's right of access (export) and right to erasure (erase)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from forewarn.context import Context

console = Console(stderr=True)
customers_app = typer.Typer(
    help="Right of access and erasure: export or erase everything held about one customer.",
    no_args_is_help=True,
)


@customers_app.command("export")
def export_cmd(
    customer_id: str,
    output: Path | None = typer.Option(None, "--output", "-o", help="write the JSON here (default: stdout)"),
) -> None:
    """Print (or write) as JSON everything held about a customer, in both stores."""
    from forewarn.privacy.subject import NotFound, export

    ctx = Context()
    try:
        data = export(ctx.engine, ctx.signals, customer_id)
    except NotFound as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    finally:
        ctx.close()
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        console.print(f"written to {output}")


@customers_app.command("erase")
def erase_cmd(
    customer_id: str,
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
) -> None:
    """Erase a customer from the state store and the signal store (sent messages stay as pseudonymous
    tombstones). Running it again is harmless."""
    from forewarn.privacy.subject import erase

    if not yes:
        typer.confirm(
            f"erase everything held about customer {customer_id!r}? This cannot be undone", abort=True
        )
    ctx = Context()
    try:
        report = erase(ctx.engine, ctx.signals, customer_id, secret=ctx.settings.secret_key)
    finally:
        ctx.close()
    if not report.found:
        console.print(f"nothing held about customer {customer_id!r}: nothing to erase")
        return
    console.print(
        f"customer {customer_id!r} erased: state rows {report.state_rows or {}}"
        f"{', customer record' if report.customer_deleted else ''}; signals {report.signals or {}}; "
        f"{report.messages_kept_as_tombstones} messages kept as tombstones under {report.pseudonym} "
        f"({report.messages_suppressed} unsent ones suppressed)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(customers_app, name="customers")
