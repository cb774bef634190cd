"""Option parsing shared by the commands."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

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
