"""One object that hands every stage its settings and stores, opened lazily and once.

>>> ctx = Context(Settings(home="/tmp/fw-ctx-doc"))
>>> ctx.settings.home.name
'fw-ctx-doc'
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from forewarn.config import Settings, get_settings
from forewarn.state.db import open_store

if TYPE_CHECKING:
    from forewarn.signals.store import SignalStore


class Context:
    """Settings plus the state store (SQLAlchemy engine) and the signal store (DuckDB)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    @cached_property
    def engine(self) -> Engine:
        # the embedded store (SQLite) is created and migrated on first use; PostgreSQL needs `forewarn db upgrade`
        return open_store(self.settings.database_url, migrate=True)

    @cached_property
    def signals(self) -> SignalStore:
        from forewarn.signals.store import SignalStore

        self.settings.signals_path.parent.mkdir(parents=True, exist_ok=True)
        return SignalStore(self.settings.signals_path)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "signals" in self.__dict__:
            self.signals.close()
