"""Option parsing shared by the commands."""

from __future__ import annotations

from datetime import datetime

import typer

from forewarn.timeutil import parse_time


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
