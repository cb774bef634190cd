"""Time in one convention: timezone-aware UTC, with naive times read as UTC.

>>> from datetime import datetime
>>> utc(datetime(2026, 1, 31, 12)).isoformat()
'2026-01-31T12:00:00+00:00'
>>> parse_time("2026-01-31T12:00:00Z") == utc(datetime(2026, 1, 31, 12))
True
"""

from __future__ import annotations

from datetime import UTC, datetime


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
