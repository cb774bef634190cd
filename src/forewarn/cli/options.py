"""Option parsing shared by the commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from forewarn.timeutil import parse_time

if TYPE_CHECKING:
    from forewarn.context import Context

README_OWN_DATA = 'README "Using it with your own data"'


class UserError(Exception):
    """A problem the user can fix, said in one line: what is wrong and what to do about it (exit 1)."""


def time_option(value: str | None) -> datetime | None:
    """An ISO-8601 time option (no zone means UTC), or None; a bad value is a usage error naming what to give.

    >>> time_option("2026-03-01T12:00:00").isoformat()
    '2026-03-01T12:00:00+00:00'
    """
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def require_signals(ctx: Context) -> None:
    """Raise ``UserError`` when the signal store holds nothing yet: a command on no data would print zeros."""
    if not any(ctx.signals.counts().values()):
        raise UserError(
            f"no signals in {ctx.settings.signals_path} yet; load your files first with "
            f"`forewarn ingest FILE...` (see {README_OWN_DATA}), or set FOREWARN_HOME to the folder that has them"
        )


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``n`` and the noun, singular for exactly one.

    >>> plural(1, "ticket"), plural(2_071, "message"), plural(2, "summary", "summaries")
    ('1 ticket', '2,071 messages', '2 summaries')
    """
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"


def duration_text(value: timedelta | None) -> str:
    """A duration as a person says it.

    >>> duration_text(timedelta(days=25)), duration_text(timedelta(days=1, hours=6)), duration_text(timedelta(0))
    ('25 days', '1 day 6 hours', 'none')
    >>> duration_text(timedelta(minutes=90))
    '1 hour 30 minutes'
    """
    if value is None or value <= timedelta(0):
        return "none"
    minutes = int(value.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour"), (mins, "minute")]
    return " ".join(f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n)


def table_width(table: Any) -> int:
    """The width a Rich table needs to show every cell on one line."""
    from rich.console import Console

    return Console(width=10_000).measure(table).maximum


@contextmanager
def stage_progress(description: str, steps: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A Rich progress bar over ``steps`` named steps; yields ``step(name)``, called as each one starts.

    Off a terminal (or with ``enabled=False``) it shows nothing: logs get the result, not the animation.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield lambda name: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=steps)
        started = False

        def step(name: str) -> None:
            nonlocal started
            bar.update(task, advance=1 if started else 0, description=f"{description}: {name}")
            started = True

        yield step
