"""`forewarn playbooks`: check playbook files, run them on the open findings, work the approval queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from forewarn.cli.options import duration_text, plural, table_width, time_option

console = Console()
err = Console(stderr=True)
playbooks_app = typer.Typer(help="Playbooks: check, run, approve, reject.", no_args_is_help=True)


@playbooks_app.command("check")
def check_cmd(paths: list[Path] = typer.Argument(..., help="playbook YAML files or folders")) -> None:
    """Validate playbook files; every problem is printed as FILE:LINE: FIELD: what was expected."""
    from forewarn.decide.playbooks import PlaybookError, load_playbooks

    try:
        pset = load_playbooks(*paths)
    except PlaybookError as e:
        for f, line, field, msg in e.problems:
            err.print(f"[red]{f}:{line}[/]: {field}: {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table("playbook", "mode", "when", "then", "cooldown", "holdout")
    for p in pset.playbooks:
        table.add_row(
            p.name,
            p.mode,
            p.when.kind + (f" {p.when.condition}" if p.when.condition else ""),
            ", ".join(a.type for a in p.then),
            duration_text(p.cooldown),
            f"{p.holdout:.0%}",
        )
    # off a terminal (a log, a pipe) the table keeps its natural width instead of squeezing into 80 columns
    (console if console.is_terminal else Console(width=max(120, table_width(table)))).print(table)
    console.print(
        f"[green]ok[/]: {plural(len(pset.playbooks), 'playbook')} in {plural(len(pset.sources), 'file')}"
    )


@playbooks_app.command("run")
def run_cmd(
    paths: list[Path] = typer.Argument(..., help="playbook YAML files or folders"),
    as_of: str | None = typer.Option(None, "--as-of", help="data time (default: now)"),
    now: str | None = typer.Option(None, "--now", help="decision time (default: the clock)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Decide on the open findings and incidents and record every decision in the outbox."""
    from forewarn.context import Context
    from forewarn.decide.engine import run_playbooks
    from forewarn.decide.playbooks import PlaybookError, load_playbooks

    try:
        pset = load_playbooks(*paths)
    except PlaybookError as e:
        err.print(str(e), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    data_time, decision_time = time_option(as_of), time_option(now)
    ctx = Context()
    try:  # (findings and incidents live in the state store: no signals needed here)
        summary = run_playbooks(ctx, pset, data_time, decision_time)
    finally:
        ctx.close()
    data = summary.to_dict()
    if as_json:
        console.print_json(json.dumps(data))
        return
    print_decisions(data)


def print_decisions(data: dict[str, Any]) -> None:
    """A run's decisions per playbook as a table (one column per outcome), and the guardrails that held."""
    outcomes = sorted({o for counts in data["by_playbook"].values() for o in counts})
    table = Table(
        title=f"decisions as of {data['as_of'][:16]}: {plural(data['findings'], 'finding')}, "
        f"{plural(data['candidates'], 'candidate')}, {data['enqueued']:,} queued"
    )
    table.add_column("playbook")
    for o in outcomes:
        table.add_column(o, justify="right")
    for name, counts in data["by_playbook"].items():
        table.add_row(name, *(f"{counts.get(o, 0):,}" for o in outcomes))
    console.print(table)
    if data["by_guardrail"]:
        held = ", ".join(f"{k} {v:,}" for k, v in sorted(data["by_guardrail"].items(), key=lambda kv: -kv[1]))
        console.print(f"held back by guardrails: {held}", soft_wrap=True)


@playbooks_app.command("digests")
def digests_cmd(
    paths: list[Path] = typer.Argument(..., help="playbook YAML files or folders (for the guardrails)"),
    now: str | None = typer.Option(None, "--now", help="decision time (default: the clock)"),
) -> None:
    """Send the digests of messages the fatigue budget folded away, where the budget has room now."""
    from forewarn.context import Context
    from forewarn.decide.digest import send_digests
    from forewarn.decide.playbooks import PlaybookError, load_playbooks

    try:
        pset = load_playbooks(*paths)
    except PlaybookError as e:
        err.print(str(e), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    ctx = Context()
    try:
        n = send_digests(ctx, pset, time_option(now))
    finally:
        ctx.close()
    console.print(f"digests enqueued: {n}")


@playbooks_app.command("held")
def held_cmd(limit: int = typer.Option(100, help="at most this many")) -> None:
    """List the approval queue (decisions held for low confidence)."""
    from forewarn.context import Context
    from forewarn.decide.engine import held

    ctx = Context()
    try:
        rows = held(ctx, limit)
    finally:
        ctx.close()
    table = Table("id", "customer", "playbook", "reason")
    for r in rows:
        table.add_row(str(r["id"]), r["customer_id"], r["playbook"] or "", r["reason"] or "")
    console.print(table)


@playbooks_app.command("approve")
def approve_cmd(
    ids: list[int] | None = typer.Argument(None, help="outbox ids of held decisions"),
    playbook: str | None = typer.Option(None, "--playbook", help="every held decision of this playbook"),
) -> None:
    """Release held decisions: they are sent when due."""
    from forewarn.context import Context
    from forewarn.decide.engine import approve, settle_held
    from forewarn.state.audit import cli_actor

    if not ids and playbook is None:
        raise typer.BadParameter("give outbox ids, or --playbook NAME")
    ctx = Context()
    try:
        if playbook is not None:
            done = settle_held(ctx, playbook, approve_all=True, actor=cli_actor())
            console.print(f"[green]approved[/] {done}")
            return
        missing = [i for i in ids or [] if not approve(ctx, i, actor=cli_actor())]
    finally:
        ctx.close()
    if missing:
        err.print(f"not held (or unknown): {', '.join(map(str, missing))}")
        raise typer.Exit(1)
    console.print(f"[green]approved[/] {len(ids or [])}")


@playbooks_app.command("reject")
def reject_cmd(
    playbook: str = typer.Option(..., "--playbook", help="every held decision of this playbook"),
) -> None:
    """Drop held decisions (recorded as suppressed, with the reason): e.g. a tripped circuit breaker."""
    from forewarn.context import Context
    from forewarn.decide.engine import settle_held
    from forewarn.state.audit import cli_actor

    ctx = Context()
    try:
        console.print(f"rejected {settle_held(ctx, playbook, approve_all=False, actor=cli_actor())}")
    finally:
        ctx.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.add_typer(playbooks_app, name="playbooks")
