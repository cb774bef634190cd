"""Portable SQL pieces for the metrics: time arithmetic, buckets and percentiles on SQLite and PostgreSQL.

Both dialects get the same answers; only the spelling differs. Percentiles use the nearest-rank method
(the smallest value whose rank is at least ``p * n``), computed in the database with window functions.

>>> import sqlalchemy as sa
>>> engine = sa.create_engine("sqlite://")
>>> with engine.connect() as conn:
...     values = sa.select(sa.literal(3.0).label("v")).union_all(
...         sa.select(sa.literal(1.0)), sa.select(sa.literal(2.0))).subquery()
...     percentiles(conn, values.c.v, (0.5, 1.0))
{0.5: 2.0, 1.0: 3.0}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

# Days since the Julian epoch at 1970-01-01: turns SQLite's julianday() into Unix seconds.
_UNIX_JULIAN = 2440587.5


def epoch(col: Any, dialect: str) -> ColumnElement[float]:
    """Seconds since 1970 (UTC) of a timestamp column, as a float."""
    if dialect == "sqlite":
        return (sa.func.julianday(col) - _UNIX_JULIAN) * 86400.0
    return sa.cast(sa.func.extract("epoch", col), sa.Float)


def seconds_between(later: Any, earlier: Any, dialect: str) -> ColumnElement[float]:
    """``later - earlier`` in seconds."""
    return epoch(later, dialect) - epoch(earlier, dialect)


def bucket(col: Any, dialect: str, size: str) -> ColumnElement[str]:
    """The start of ``col``'s day or week (Monday) in UTC as ``YYYY-MM-DD``."""
    if size not in ("day", "week"):
        raise ValueError(f"bucket must be 'day' or 'week', got {size!r}")
    if dialect == "sqlite":
        if size == "day":
            return sa.func.strftime("%Y-%m-%d", col)
        # 'weekday 0' moves forward to Sunday (or stays); six days back is that week's Monday
        return sa.func.date(col, "weekday 0", "-6 days")
    utc = sa.func.timezone("UTC", col)
    return sa.func.to_char(sa.func.date_trunc(size, utc), "YYYY-MM-DD")


def percentiles(conn: sa.Connection, value: Any, ps: Iterable[float]) -> dict[float, float | None]:
    """Nearest-rank percentiles of a column of a subquery, computed in the database.

    Rows whose value is NULL are ignored; an empty set gives ``None`` for every percentile.
    """
    ps = tuple(ps)
    ranked = (
        sa.select(
            value.label("v"),
            sa.func.row_number().over(order_by=value).label("rn"),
            sa.func.count().over().label("n"),
        )
        .where(value.is_not(None))
        .subquery()
    )
    cols = [
        sa.func.min(sa.case((ranked.c.rn >= sa.literal(p) * ranked.c.n, ranked.c.v))).label(f"p{i}")
        for i, p in enumerate(ps)
    ]
    row = conn.execute(sa.select(*cols)).one()
    return {p: (None if row[i] is None else float(row[i])) for i, p in enumerate(ps)}
