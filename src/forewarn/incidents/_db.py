"""Small helpers shared by the incident modules: dialect and typed parameters for raw SQL.

Raw SQL is used where a set query (INSERT .. SELECT) does the work of a loop; its datetime parameters go
through ``UtcDateTime`` so SQLite stores them in the same text form the ORM writes (comparisons stay correct).
Event times are normalised with ``forewarn.timeutil.utc``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.orm import Session

from forewarn.state.db import defer_checkpoint
from forewarn.state.models import UtcDateTime


def dialect(session: Session) -> str:
    """``sqlite`` or ``postgresql`` (the two stores forewarn supports)."""
    return session.get_bind().dialect.name


def sql(statement: str, *datetime_params: str, **extra: Any) -> TextClause:
    """A text clause whose named ``datetime_params`` bind as ``UtcDateTime``."""
    clause = text(statement)
    binds = [bindparam(name, type_=UtcDateTime()) for name in datetime_params]
    binds += [bindparam(name, type_=type_) for name, type_ in extra.items()]
    return clause.bindparams(*binds) if binds else clause


# page cache for one large fan-out on SQLite (KiB): a million notices dirty a few hundred MB of pages; with
# the default 2 MB cache SQLite spills them to the WAL mid-transaction and rewrites them again and again
BULK_CACHE_KIB = 512 * 1024


@contextmanager
def bulk_writes(session: Session) -> Iterator[None]:
    """Room for a set-based fan-out on SQLite: a large page cache (restored after), and the WAL checkpoint
    moved out of the commit (``forewarn.state.db.defer_checkpoint``). PostgreSQL needs nothing here."""
    if dialect(session) != "sqlite":
        yield
        return
    defer_checkpoint(session)
    before = session.execute(text("PRAGMA cache_size")).scalar_one()
    session.execute(text(f"PRAGMA cache_size = -{BULK_CACHE_KIB}"))
    try:
        yield
    finally:
        session.execute(text(f"PRAGMA cache_size = {int(before)}"))
