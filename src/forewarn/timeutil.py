"""Time in one convention: timezone-aware UTC, with naive times read as UTC.

>>> from datetime import datetime
>>> utc(datetime(2026, 1, 31, 12)).isoformat()
'2026-01-31T12:00:00+00:00'
>>> parse_time("2026-01-31T12:00:00Z") == utc(datetime(2026, 1, 31, 12))
True
>>> parse_duration("90m")
datetime.timedelta(seconds=5400)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def utc(t: datetime | None = None) -> datetime:
    """``t`` as aware UTC (naive means UTC); the wall clock when ``None``."""
    if t is None:
        return datetime.now(UTC)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_time(value: str) -> datetime:
    """An ISO-8601 time (``Z`` allowed; no zone means UTC) as aware UTC; ``ValueError`` names what was expected."""
    try:
        return utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(f"expected an ISO-8601 time such as 2026-01-31T12:00:00Z, got {value!r}") from None


def parse_duration(value: Any) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"2w"`` or a number of seconds -> ``timedelta``.

    >>> parse_duration("7d")
    datetime.timedelta(days=7)
    >>> parse_duration(30)
    datetime.timedelta(seconds=30)
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 7d, 12h or 30m")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration such as 7d, 12h or 30m (got {value!r})")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
