"""Connecting to the state store: engines, sessions, and the schema-version check.

SQLite (the embedded default) runs in WAL mode with foreign keys on; PostgreSQL is used as configured.
``open_store`` refuses an out-of-date schema instead of silently using it.

>>> import tempfile, os
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
>>> upgrade(url)
>>> engine = open_store(url)
>>> schema_status(engine).current
True
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this version of forewarn expects."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; creates the SQLite file's folder and turns on WAL and foreign keys.

    Statement parameters (customers' addresses, message bodies) never appear in errors or SQL logs
    (``hide_parameters``).
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "checkin")
        def _deferred_checkpoint(dbapi_conn: Any, record: Any) -> None:
            if record is None or not record.info.pop(DEFER_CHECKPOINT, False) or dbapi_conn is None:
                return  # (no connection: it was invalidated, and a new one starts with the defaults)
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT}")
            if path and path != ":memory:":
                threading.Thread(
                    target=_checkpoint, args=(path,), name="forewarn-sqlite-checkpoint", daemon=True
                ).start()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


# SQLite's default: a commit that leaves the WAL longer than this many pages copies it into the database file
SQLITE_AUTOCHECKPOINT = 1000
DEFER_CHECKPOINT = "forewarn_defer_checkpoint"


def defer_checkpoint(session: Session) -> None:
    """On SQLite, keep the WAL checkpoint out of this transaction's commit; it runs in the background after.

    A bulk transaction (a million notices) leaves some 600 MB in the WAL; SQLite would copy it into the
    database file inside the commit, about 2 s before the caller hears that its rows are durable. Here the
    commit only appends to the WAL, and once the connection is back in the pool a background thread runs the
    checkpoint on its own connection (as PostgreSQL's checkpointer does). Nothing is at risk meanwhile: the
    WAL is the durable copy, and any later commit or the last connection's close checkpoints as well.
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    conn = session.connection()
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
    conn.connection.info[DEFER_CHECKPOINT] = True


def _checkpoint(path: str) -> None:
    """Copy the WAL into the database file without blocking anyone (PASSIVE); errors are left for the next
    automatic checkpoint to retry."""
    try:
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        pass


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (creating it when new)."""
    _migrate(command.upgrade, url, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` back to ``revision`` (``base`` removes forewarn's schema)."""
    _migrate(command.downgrade, url, revision)


def _migrate(step: Any, url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # one transaction: a failed migration leaves nothing half-applied
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            step(cfg, revision)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SchemaStatus:
    database: str | None  # revision in the database, None when never migrated
    expected: str  # head revision of this code

    @property
    def current(self) -> bool:
        return self.database == self.expected

    def describe(self) -> str:
        if self.current:
            return f"schema is current (revision {self.expected})"
        if self.database is None:
            return "the database has no forewarn schema yet; run `forewarn db upgrade`"
        return (
            f"the database schema is at revision {self.database} but this forewarn expects {self.expected}; "
            "run `forewarn db upgrade`"
        )


def schema_status(engine: Engine) -> SchemaStatus:
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return SchemaStatus(database=current, expected=head)


def open_store(url: str, *, check: bool = True, migrate: bool = False, **kwargs: Any) -> Engine:
    """An engine on a migrated store; raises ``SchemaOutOfDate`` when the schema is not current.

    ``migrate=True`` first creates or migrates an embedded (SQLite) store that is new or behind, as embedded
    stores do on first use; a server database (PostgreSQL) is never migrated behind its operator's back.
    """
    engine = make_engine(url, **kwargs)
    if check:
        status = schema_status(engine)
        if not status.current and migrate and engine.dialect.name == "sqlite" and _is_behind(engine, status):
            upgrade(url)
            status = schema_status(engine)
        if not status.current:
            engine.dispose()
            raise SchemaOutOfDate(status.describe())
    return engine


def _is_behind(engine: Engine, status: SchemaStatus) -> bool:
    """True when the database has no schema or one this code can migrate forward (not a newer one)."""
    if status.database is None:
        return True
    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    return any(rev.revision == status.database for rev in script.walk_revisions())


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: changes apply whole or not at all."""
    with session_factory(engine)() as session, session.begin():
        yield session
