"""One object that hands every stage its settings and stores, opened lazily and once.

>>> ctx = Context(Settings(home="/tmp/fw-ctx-doc"))
>>> ctx.settings.home.name
'fw-ctx-doc'
"""

from __future__ import annotations

import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from forewarn.config import Settings, get_settings
from forewarn.state.db import open_store

if TYPE_CHECKING:
    from forewarn.signals.store import SignalStore
    from forewarn.state.secrets import Secrets

# how long a process trusts the secrets it read (a rotation by another process is seen within this time)
SECRETS_FRESH_S = 30.0


class Context:
    """Settings plus the state store (SQLAlchemy engine) and the signal store (DuckDB)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._secrets: tuple[float, Secrets] | None = None
        self._secrets_lock = threading.Lock()

    @property
    def secrets(self) -> Secrets:
        """The signing secrets in force: configured ones, else those generated in the state store."""
        with self._secrets_lock:
            if self._secrets is None or time.monotonic() - self._secrets[0] > SECRETS_FRESH_S:
                self._secrets = (time.monotonic(), self._read_secrets())
            return self._secrets[1]

    def reload_secrets(self) -> None:
        """Read the secrets again on next use (after a rotation)."""
        with self._secrets_lock:
            self._secrets = None

    def _read_secrets(self) -> Secrets:
        from forewarn.state import secrets
        from forewarn.state.db import transaction

        s, hook = self.settings, self.settings.webhook
        with transaction(self.engine) as session:
            return secrets.Secrets(
                links=secrets.resolve(
                    session,
                    "links",
                    s.secret_key if "secret_key" in s.model_fields_set else None,
                    s.previous_secret_key,
                ),
                webhooks=secrets.resolve(
                    session,
                    "webhooks",
                    hook.secret if "secret" in hook.model_fields_set else None,
                    hook.previous_secret,
                ),
            )

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
