"""Ingestion: signal files (CSV, JSONL, Parquet) and API batches into the signal store, entities into
the state store.

Per file: the kind comes from ``kind=`` (``--kind``), else a ``kind`` column, else the file stem, singular
or plural (``usage.csv``, ``customers.jsonl``, ``invoices.jsonl``). Rows stream through in bounded chunks; each chunk is validated in
DuckDB SQL (``forewarn.signals.validate``) and its good rows appended idempotently by ``event_id``. Bad rows
are counted and reported (file, line, field, what was expected); ``strict=True`` stores nothing from a file
with any bad row. A directory is read entities first (customers, services, dependencies), then signals.

Customer ids the state store does not know are rejected (``unknown_customers="reject"``, the default setting:
a typo must not become a customer) or created as minimal customers (``"create"``, when asked). Each valid
inbound contact also opens a ``Ticket`` (idempotent by the contact's ``event_id``), and each ``ticket_update``
moves its ticket's status (``forewarn.state.tickets``).

>>> import tempfile, pathlib
>>> from forewarn.config import Settings
>>> from forewarn.context import Context
>>> from forewarn.state.db import upgrade
>>> home = pathlib.Path(tempfile.mkdtemp())
>>> upgrade(f"sqlite:///{home}/state.db")
>>> ctx = Context(Settings(home=home))
>>> _ = (home / "usage.csv").write_text("event_id,customer_id,ts,metric,value\\n"
...     "e1,c1,2026-01-01,data_gb,1.5\\ne2,c1,2026-01-02,data_gb,lots\\n")
>>> report = ingest_paths(ctx, [home / "usage.csv"], unknown_customers="create")
>>> (report.new, report.duplicate, report.rejected)
(1, 0, 1)
>>> print(report.errors[0])  # doctest: +ELLIPSIS
/...usage.csv:3: field 'value': not a valid float; expected a number, got 'lots'
>>> ingest_records(ctx, "usage", [{"event_id": "e1", "customer_id": "c1", "ts": "2026-01-01",
...                                "metric": "data_gb", "value": 1.5}]).duplicate
1
>>> ctx.close()
"""

from __future__ import annotations

import json
import math
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy import Engine, event

from forewarn.rows import RowError
from forewarn.signals.readers import JsonlReader, Reader, UnsupportedFile, open_reader
from forewarn.signals.schema import KINDS, SignalKind
from forewarn.signals.store import SignalStore
from forewarn.signals.validate import (
    MISSING,
    UNKNOWN_CUSTOMER,
    checked_sql,
    describe,
    ids_sql,
    q,
)
from forewarn.state import customers as entities
from forewarn.state import tickets as ticket_store

if TYPE_CHECKING:  # the context bundles the stores; signals is below it
    from forewarn.context import Context

ENTITIES = ("customers", "services", "dependencies")
# files a simulator output folder holds beside the data, which are not for ingestion
NOT_DATA = {
    "ground_truth": "ground truth, for scoring; not ingested",
    "world": "simulation settings; not ingested",
}
SMALL_CHUNK = 50_000  # rows: below this, one more aggregate in a scan is cheaper than one more statement
MAX_ERRORS = 100  # errors kept per source (all bad rows are counted)
# as many distinct hashes as ids proves the ids distinct (equal ids hash equal); a hash collision only costs
# the dedupe it would have skipped. ~30% cheaper than counting the distinct strings.
DISTINCT_IDS = "count(DISTINCT hash(event_id)) FILTER (WHERE event_id IS NOT NULL)"
Policy = Literal["reject", "create"]
# kinds that change the tickets table, and the columns of theirs it needs
TICKET_COLUMNS = {
    "contact": "event_id, customer_id, ts, channel, subject, text, topic",
    "ticket_update": "ticket_id, ts, status",
}
# what reading a broken file raises (corrupt Parquet, bad CSV quoting, not UTF-8...)
UNREADABLE = (duckdb.Error, pa.ArrowException, OSError, ValueError)


@dataclass
class SourceReport:
    """What happened to one file or API batch."""

    source: str
    kind: str
    new: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    note: str | None = None  # e.g. why a file was skipped or rejected whole
    created_customers: int = 0
    unknown_customer_rows: int = 0  # rows rejected because their customer is not in the state store
    tickets: int = 0
    rows_read: int = 0  # every row seen, good or bad
    failed: bool = False  # the source could not be read at all (see note)

    @property
    def rows(self) -> int:
        return self.new + self.duplicate + self.rejected

    def add_error(self, error: RowError) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)


@dataclass
class IngestReport:
    """Per source: rows new, duplicate (already stored or repeated) and rejected, with the errors."""

    sources: list[SourceReport] = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(s.new for s in self.sources)

    @property
    def duplicate(self) -> int:
        return sum(s.duplicate for s in self.sources)

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.sources)

    @property
    def errors(self) -> list[RowError]:
        return [e for s in self.sources for e in s.errors]

    @property
    def ok(self) -> bool:
        """Nothing rejected and every source readable."""
        return self.rejected == 0 and not any(s.failed for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "duplicate": self.duplicate,
            "rejected": self.rejected,
            "sources": [
                {
                    "source": s.source,
                    "kind": s.kind,
                    "new": s.new,
                    "duplicate": s.duplicate,
                    "rejected": s.rejected,
                    "note": s.note,
                    "errors": [e.as_dict() for e in s.errors],
                }
                for s in self.sources
            ],
        }


# customer ids known to exist, per state store, kept across batches (an API batch would otherwise look up
# its ~1,000 customers every time). Only positive facts are cached: ids are only ever added, and a DELETE
# or TRUNCATE on customers through the engine clears it. Bounded: cleared when it grows past KNOWN_MAX.
KNOWN_MAX = 2_000_000
_KNOWN: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
_KNOWN_LOCK = threading.Lock()


def known_customer_cache(engine: Engine) -> set[str]:
    """The shared set of customer ids known to exist in ``engine``'s state store.

    >>> import sqlalchemy as sa
    >>> e = sa.create_engine("sqlite://")
    >>> known_customer_cache(e).add("c1")
    >>> with e.begin() as c:
    ...     _ = c.exec_driver_sql("CREATE TABLE customers (id TEXT)")
    ...     _ = c.exec_driver_sql("DELETE FROM customers")
    >>> known_customer_cache(e)
    set()
    """
    with _KNOWN_LOCK:
        cache = _KNOWN.get(engine)
        if cache is None:
            cache = _KNOWN[engine] = set()
            event.listen(engine, "before_cursor_execute", _forgetter(cache))
        return cache


def preload_known_customers(engine: Engine, limit: int = KNOWN_MAX // 2) -> bool:
    """Fill the shared cache with every customer id, when there are at most ``limit``: one scan instead of
    a lookup of each batch's new ids (a stream of small batches meets new customers for a long time).
    True when loaded; False (nothing done) when there are more.

    >>> import sqlalchemy as sa
    >>> e = sa.create_engine("sqlite://")
    >>> with e.begin() as c:
    ...     _ = c.exec_driver_sql("CREATE TABLE customers (id TEXT PRIMARY KEY)")
    ...     _ = c.exec_driver_sql("INSERT INTO customers VALUES ('c1'), ('c2')")
    >>> preload_known_customers(e), sorted(known_customer_cache(e))
    (True, ['c1', 'c2'])
    >>> preload_known_customers(e, limit=1)
    False
    """
    customers = sa.table("customers", sa.column("id"))
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(customers)).scalar_one()
        if n > limit:
            return False
        # the driver's rows as they come: SQLAlchemy's row processing would cost more than the query
        rows = conn.exec_driver_sql("SELECT id FROM customers").cursor.fetchall()
    known_customer_cache(engine).update(r[0] for r in rows)
    return True


def _forgetter(cache: set[str]) -> Callable[..., None]:
    def forget(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        head = statement.lstrip()[:8].upper()
        if head.startswith(("DELETE", "TRUNCATE", "DROP")) and "customers" in statement.lower():
            cache.clear()

    return forget


_ENCODER = json.JSONEncoder(default=str)


class _StrictRejection(Exception):
    """Raised inside a file's transaction to roll it back whole."""


# -- public API -------------------------------------------------------------------------------------------


def ingest_paths(
    ctx: Context,
    paths: Sequence[Path | str],
    *,
    kind: str | None = None,
    strict: bool = False,
    progress: bool = False,
    unknown_customers: Policy | None = None,
    chunk_rows: int = 1_000_000,
) -> IngestReport:
    """Ingest files and directories (entities first, then signals); see the module docstring."""
    policy = unknown_customers or ctx.settings.unknown_customers
    if kind is not None and kind not in KINDS and kind not in ENTITIES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join([*ENTITIES, *KINDS])}")
    report = IngestReport()
    files = _expand(paths, report)
    plan: list[tuple[Path, str | None]] = []
    for f in files:
        k = kind or _resolve_kind(f, report)
        if k is not False:
            plan.append((f, k))  # type: ignore[arg-type]
    plan.sort(key=lambda fk: ENTITIES.index(fk[1]) if fk[1] in ENTITIES else len(ENTITIES))
    session = IngestSession(ctx, policy)
    bar = _progress_bar() if progress else None
    with bar or nullcontext():
        for path, k in plan:
            if k in ENTITIES:
                report.sources.append(_ingest_entities(ctx.engine, path, k, strict))  # type: ignore[arg-type]
                session.known.clear()  # customers changed (the shared cache holds only ids that exist)
                continue
            reader = open_reader(path)
            try:
                total = reader.progress_total
            except UNREADABLE as e:
                report.sources.append(
                    SourceReport(str(path), k or "?", note=f"cannot read: {e}", failed=True)
                )
                continue
            task = bar.add_task(path.name, total=total) if bar else None
            update = (lambda n, t=task: bar.update(t, completed=n)) if bar else None  # type: ignore[misc]
            if reader.native_sql([]) is not None:
                chunks: Iterable[tuple[pa.Table | None, int]] = iter([(None, total)])
            else:
                chunks = reader.chunks(_wanted_columns(k), chunk_rows)
            tracker = _Progress(update) if update else None
            report.sources.append(
                session.ingest(str(path), k, reader, chunks, strict=strict, progress=tracker)  # type: ignore[arg-type]
            )
    return report


def ingest_records(
    ctx: Context,
    kind: str | None,
    records: Sequence[dict[str, Any]],
    *,
    source: str = "api",
    strict: bool = False,
    unknown_customers: Policy | None = None,
) -> IngestReport:
    """Ingest one batch of records (dicts). ``kind=None`` reads each record's own ``kind``.

    Errors name the record's 0-based index in the batch as their ``line``.
    """
    report = IngestReport()
    if kind in ENTITIES:
        fn = {"customers": entities.upsert_customers, "services": entities.upsert_services}.get(
            kind, entities.upsert_dependencies
        )
        report.sources.append(_entity_report(source, kind, list(enumerate(records)), ctx.engine, fn, strict))
        return report
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join([*ENTITIES, *KINDS])}")
    session = IngestSession(ctx, unknown_customers or ctx.settings.unknown_customers)
    table = record_columns(records, kind)
    reader: Reader
    if table is not None:
        reader = RecordsReader(Path(source), table.schema)
    else:
        # a value the columns cannot hold as its JSON text (nested, NaN, ...): DuckDB parses each record
        encode = _ENCODER.encode  # one encoder for the batch: json.dumps(default=...) builds one per call
        docs = [encode(r) for r in records]
        table = pa.table({"__row": pa.array(np.arange(len(docs), dtype=np.int64)), "__doc": pa.array(docs)})
        reader = JsonlReader(Path(source))
    report.sources.append(session.ingest(source, kind, reader, iter([(table, len(records))]), strict=strict))
    return report


def _json_text(v: Any) -> str | None:
    """What DuckDB's ``json_extract_string`` gives for a scalar JSON value; raises TypeError otherwise."""
    if v is None or type(v) is str:
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        return str(v)
    if type(v) is float and math.isfinite(v):
        return repr(v)
    raise TypeError(v)


def record_columns(records: Sequence[dict[str, Any]], kind: str | None) -> pa.Table | None:
    """The wanted columns of ``records`` as the text a JSON Lines chunk would yield (no JSON encoding or
    parsing); None when a record is not a dict or a value is not a finite scalar (the JSON path words it).

    A number field whose values are all finite numbers (or absent) stays numeric (DOUBLE): writing each
    number as text for DuckDB to read back would cost more than the rest of the conversion.
    """
    columns = _wanted_columns(kind)
    if "lines" in columns:
        return None
    numbers = {f.name for f in KINDS[kind].all_fields if f.type == "float"} if kind is not None else set()
    data: dict[str, Any] = {"__row": pa.array(np.arange(len(records), dtype=np.int64))}
    try:
        for c in columns:
            values = [r.get(c) for r in records]
            if c in numbers and (column := _numbers(values)) is not None:
                data[c] = column
                continue
            try:
                # all text or absent (most columns): Arrow converts the list in C
                data[c] = pa.array(values, pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                data[c] = pa.array([_json_text(v) for v in values], pa.string())
    except (TypeError, AttributeError):
        return None
    data["__malformed"] = pa.nulls(len(records), pa.string())
    return pa.table(data)


def _numbers(values: list[Any]) -> pa.Array | None:
    """``values`` as float64 when each is a finite int or float or None; else None (Arrow would read a
    bool as a number, which JSON text does not)."""
    if any(type(v) is bool for v in values):
        return None
    try:
        column = pa.array(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    return None if pc.any(pc.invert(pc.is_finite(column))).as_py() else column


class RecordsReader(JsonlReader):
    """API records already split into columns by :func:`record_columns` (validated as JSON Lines)."""

    def __init__(self, path: Path, schema: pa.Schema | None = None) -> None:
        super().__init__(path)
        self.schema = schema

    def source_sql(self, view: str, columns: Sequence[str]) -> str:
        return f"SELECT * FROM {view}"

    def source_types(self, view: str, columns: Sequence[str]) -> dict[str, str] | None:
        types = super().source_types(view, columns)
        if types is not None and self.schema is not None:
            for c in columns:
                if c in self.schema.names and pa.types.is_floating(self.schema.field(c).type):
                    types[c] = "DOUBLE"
        return types


# -- files and kinds --------------------------------------------------------------------------------------


def _expand(paths: Sequence[Path | str], report: IngestReport) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    files.append(f)
        elif p.exists():
            files.append(p)
        else:
            report.sources.append(
                SourceReport(
                    str(p),
                    "?",
                    note=f"no such file or directory (in {Path.cwd()}); check the name and the folder",
                    failed=True,
                )
            )
    return files


def _resolve_kind(path: Path, report: IngestReport) -> str | None | Literal[False]:
    """The kind by file stem, None for "from the kind column", False when the file is skipped (noted)."""
    stem = path.name.split(".")[0]
    if stem in NOT_DATA:
        report.sources.append(SourceReport(str(path), "-", note=NOT_DATA[stem]))
        return False
    try:
        reader = open_reader(path)
    except UnsupportedFile as e:
        report.sources.append(SourceReport(str(path), "?", note=str(e), failed=True))
        return False
    try:
        columns = reader.columns()
    except UNREADABLE:
        columns = []  # reading it fails again later, and is reported then
    if stem not in ENTITIES and "kind" in columns:
        return None
    if stem in KINDS or stem in ENTITIES:
        return stem
    if stem.endswith("s") and stem[:-1] in KINDS:  # invoices.jsonl, contacts.csv
        return stem[:-1]
    report.sources.append(
        SourceReport(
            str(path),
            "?",
            note=f"cannot tell the kind: no --kind, no 'kind' column, and the file name {stem!r} is not "
            "one of " + ", ".join([*ENTITIES, *KINDS]) + " (or their plurals); give --kind",
            failed=True,
        )
    )
    return False


def _wanted_columns(kind: str | None) -> list[str]:
    if kind is not None:
        return KINDS[kind].columns
    cols = ["kind"]
    for k in KINDS.values():
        cols += [c for c in k.columns if c not in cols]
    return cols


# -- entities ---------------------------------------------------------------------------------------------


def _ingest_entities(engine: Engine, path: Path, kind: str, strict: bool) -> SourceReport:
    fn = {
        "customers": entities.upsert_customers,
        "services": entities.upsert_services,
        "dependencies": entities.upsert_dependencies,
    }[kind]
    try:
        records = list(open_reader(path).records())
    except (OSError, ValueError) as e:
        return SourceReport(str(path), kind, note=f"cannot read: {e}", failed=True)
    return _entity_report(str(path), kind, records, engine, fn, strict)


def _entity_report(
    source: str,
    kind: str,
    records: list[tuple[int, Any]],
    engine: Engine,
    fn: Callable[..., Any],
    strict: bool,
) -> SourceReport:
    model = {"customers": entities.CustomerIn, "services": entities.ServiceIn}.get(
        kind, entities.DependencyIn
    )
    if strict:
        _, rejected, errors = entities.validate_records(model, records, source)
        if rejected:
            r = SourceReport(source, kind, rejected=len(records), errors=errors[:MAX_ERRORS])
            r.note = f"strict: {rejected} bad record(s), nothing from this source was stored"
            return r
    res = fn(engine, records, source=source)
    return SourceReport(
        source,
        kind,
        new=res.inserted,
        duplicate=res.updated,
        rejected=res.rejected,
        errors=res.errors[:MAX_ERRORS],
    )


# -- signals ----------------------------------------------------------------------------------------------


class IngestSession:
    """One ingestion run: the stores, the unknown-customer policy and a cache of customer ids that exist."""

    def __init__(self, ctx: Context, policy: Policy) -> None:
        self.ctx, self.policy = ctx, policy
        self.store: SignalStore = ctx.signals
        self.known: set[str] = set()
        self._malformed_col = False  # the source has a __malformed column (rows the reader could not parse)
        self._small = False  # the chunk is small: statements cost more than scanning it twice

    def ingest(
        self,
        source: str,
        kind: str | None,
        reader: Reader,
        chunks: Iterable[tuple[pa.Table | None, int]],
        *,
        strict: bool,
        progress: _Progress | None = None,
    ) -> SourceReport:
        report = SourceReport(source, kind or "(kind column)")
        to_create: set[str] = set()
        tickets: list[pa.Table] = []
        try:
            with self.store.transaction() as cur:
                for table, step in chunks:
                    with progress.watch(cur, step) if progress else nullcontext():
                        self._chunk(cur, report, reader, kind, table, strict, to_create, tickets)
                report.rejected += reader.rejected_rows
                report.rows_read += reader.rejected_rows
                for e in reader.row_errors:
                    report.add_error(e)
                report.errors = sorted(reader.relocate(report.errors), key=lambda e: e.line or 0)
                if strict and report.rejected:
                    raise _StrictRejection
                if to_create:
                    report.created_customers = entities.ensure_customers(self.ctx.engine, to_create)
                    self._remember(to_create)
        except _StrictRejection:
            report.note = f"strict: {report.rejected} bad row(s), nothing from this source was stored"
            report.rejected = report.rows_read
            report.new = report.duplicate = 0
            return report
        except UNREADABLE as e:
            # an unreadable file (corrupt Parquet, broken CSV quoting, not UTF-8...): reported, nothing stored
            report.failed = True
            report.note = f"cannot read: {e}"
            report.rejected = report.rows_read
            report.new = report.duplicate = 0
            return report
        if tickets:
            self._tickets(report, tickets)
        return report

    def _tickets(self, report: SourceReport, tables: list[pa.Table]) -> None:
        """Open a ticket per new contact, then apply the status updates (contacts first: a file may hold both)."""
        contacts = [r for t in tables if "channel" in t.column_names for r in t.to_pylist()]
        updates = [r for t in tables if "ticket_id" in t.column_names for r in t.to_pylist()]
        if contacts:
            report.tickets = ticket_store.open_tickets(self.ctx.engine, contacts)
            updates += self._stored_updates([c["event_id"] for c in contacts])
        if updates:
            result = ticket_store.apply_updates(self.ctx.engine, updates)
            if result.unknown:
                note = (
                    f"{result.unknown} ticket update(s) name no known ticket (ticket_id is the event_id of the "
                    "contact that opened it); they are kept in the signal store"
                )
                report.note = f"{report.note}; {note}" if report.note else note

    def _stored_updates(self, ticket_ids: list[str]) -> list[dict[str, Any]]:
        """Updates already stored for these tickets: a helpdesk's webhooks may arrive before the contact."""
        kind = KINDS["ticket_update"]
        if not self.store.count(kind.name):
            return []
        cur = self.store.cursor()
        view = f"fw_tickets_{uuid.uuid4().hex}"
        cur.register(view, pa.table({"id": pa.array(ticket_ids, pa.string())}))
        try:
            rows = cur.execute(
                f"SELECT u.ticket_id, u.ts, u.status FROM {kind.table} u JOIN {view} v ON v.id = u.ticket_id"
            ).fetchall()
        finally:
            unregister_view(cur, view)
        return [{"ticket_id": t, "ts": ts, "status": st} for t, ts, st in rows]

    def _chunk(
        self,
        cur: duckdb.DuckDBPyConnection,
        report: SourceReport,
        reader: Reader,
        kind: str | None,
        table: pa.Table | None,
        strict: bool,
        to_create: set[str],
        tickets: list[pa.Table],
    ) -> None:
        view = f"__chunk_{uuid.uuid4().hex}"
        if table is not None:
            cur.register(view, table)
        try:
            wanted = _wanted_columns(kind)
            native = reader.native_sql(wanted) if table is None else None
            src = native or reader.source_sql(view, wanted)
            types = None if native else reader.source_types(view, wanted)
            if types is None:
                types = {r[0]: r[1] for r in cur.execute(f"DESCRIBE {src}").fetchall()}
            # JSON text is parsed once into a temporary table; API records come as text columns already,
            # and planning the validation twice costs less than writing the table (~9 ms a batch)
            materialize = not native and not isinstance(reader, RecordsReader)
            self._small = table is not None and table.num_rows <= SMALL_CHUNK
            parts = [(KINDS[kind], src)] if kind is not None else self._split_by_kind(cur, report, src, types)
            for k, part in parts:
                # a chunk in memory is validated once into a temporary table (JSON is parsed once); a file
                # DuckDB reads itself is scanned twice instead of copied
                self._part(cur, report, k, part, types, strict, to_create, tickets, materialize=materialize)
        finally:
            if table is not None:
                unregister_view(cur, view)

    def _split_by_kind(
        self, cur: duckdb.DuckDBPyConnection, report: SourceReport, src: str, types: dict[str, str]
    ) -> list[tuple[SignalKind, str]]:
        names = ", ".join("'" + k + "'" for k in KINDS)
        bad = f"(kind IS NULL OR kind NOT IN ({names}))"
        n_bad = cur.execute(f"SELECT count(*) FROM ({src}) WHERE {bad}").fetchall()[0][0]
        if n_bad:
            report.rejected += n_bad
            report.rows_read += n_bad
            malformed = "__malformed" if "__malformed" in types else "NULL"
            rows = cur.execute(
                f"SELECT __row, kind, {malformed} FROM ({src}) WHERE {bad} ORDER BY __row LIMIT {MAX_ERRORS}"
            ).fetchall()
            for line, got, text in rows:
                if text is not None:
                    report.add_error(
                        RowError(report.source, line, "(row)", "a JSON object", text, "not JSON")
                    )
                else:
                    report.add_error(
                        RowError(
                            report.source, line, "kind", "one of " + ", ".join(KINDS), got, "unknown kind"
                        )
                    )
        present = [r[0] for r in cur.execute(f"SELECT DISTINCT kind FROM ({src}) WHERE NOT {bad}").fetchall()]
        return [(KINDS[k], f"SELECT * FROM ({src}) WHERE kind = '{k}'") for k in sorted(present)]

    def _part(
        self,
        cur: duckdb.DuckDBPyConnection,
        report: SourceReport,
        kind: SignalKind,
        src: str,
        types: dict[str, str] | None,
        strict: bool,
        to_create: set[str],
        tickets: list[pa.Table],
        *,
        materialize: bool = False,
        errors_from: str | None = None,
    ) -> None:
        if types is not None:
            self._malformed_col = "__malformed" in types
        if materialize:
            # keep only what counting and inserting need: a narrow table is much cheaper to write; the
            # (rare) error rows are worded from the full validation query instead
            tmp = f"__checked_{uuid.uuid4().hex}"
            full = checked_sql(kind, src, types)  # type: ignore[arg-type]
            narrow = ", ".join(q(c) for c in kind.columns)
            cur.execute(f"CREATE TEMP TABLE {tmp} AS SELECT __row, {narrow}, __ok FROM ({full})").fetchall()
            try:
                self._part(
                    cur,
                    report,
                    kind,
                    f"SELECT * FROM {tmp}",
                    None,
                    strict,
                    to_create,
                    tickets,
                    errors_from=full,
                )
            finally:
                with suppress(duckdb.Error):
                    cur.execute(f"DROP TABLE IF EXISTS {tmp}").fetchall()
            return
        checked = f"WITH c AS ({src if types is None else checked_sql(kind, src, types)}) "
        ids = src if types is None else ids_sql(kind, src, types)
        if self._fused(cur, report, kind, checked, ids, strict, tickets, errors_from):
            return
        has_customer = "customer_id" in kind.columns
        if has_customer:
            groups = cur.execute(
                checked + "SELECT customer_id, count(*), count(*) FILTER (WHERE __ok) FROM c GROUP BY ALL"
            ).fetchall()
        else:
            groups = cur.execute(
                checked + "SELECT NULL, count(*), count(*) FILTER (WHERE __ok) FROM c"
            ).fetchall()
        total = sum(g[1] for g in groups)
        report.rows_read += total
        ok = sum(g[2] for g in groups)
        unknown = (
            self._unknown([g[0] for g in groups if g[2] and g[0] is not None]) if has_customer else set()
        )
        unknown_view = None
        keep = "__ok"
        unknown_rows = 0
        if unknown and self.policy == "reject":
            unknown_rows = sum(g[2] for g in groups if g[0] in unknown)
            unknown_view = f"__unknown_{uuid.uuid4().hex}"
            cur.register(unknown_view, pa.table({"id": pa.array(sorted(unknown), pa.string())}))
            keep = f"__ok AND customer_id NOT IN (SELECT id FROM {unknown_view})"
        elif unknown:
            to_create.update(unknown)
            self.known.update(unknown)
        try:
            rejected = total - ok + unknown_rows
            report.rejected += rejected
            report.unknown_customer_rows += unknown_rows
            if rejected and len(report.errors) < MAX_ERRORS:
                full = f"WITH c AS ({errors_from}) " if errors_from else checked
                self._errors(cur, report, kind, full, keep, unknown_view)
            if strict and report.rejected:
                return  # the file will be rolled back: no point inserting
            good = checked + f"SELECT * FROM c WHERE {keep}"
            result = self.store.insert_select(cur, kind, good, total=ok - unknown_rows, first_by="__row")
            report.new += result.new
            report.duplicate += result.duplicate
            if kind.name in TICKET_COLUMNS:
                cols = TICKET_COLUMNS[kind.name]
                tickets.append(cur.sql(checked + f"SELECT {cols} FROM c WHERE {keep}").to_arrow_table())
        finally:
            if unknown_view:
                unregister_view(cur, unknown_view)

    def _fused(
        self,
        cur: duckdb.DuckDBPyConnection,
        report: SourceReport,
        kind: SignalKind,
        checked: str,
        ids: str,
        strict: bool,
        tickets: list[pa.Table],
        errors_from: str | None,
    ) -> bool:
        """Validate and insert in one statement when every customer is known; False: not done, use the
        general path (which also handles unknown customers).

        A cheap first scan of ``ids`` (the cleaned ``event_id`` and ``customer_id`` only, not validated)
        gives how many rows, the id range (the check against stored ids is skipped when no stored id falls
        in it), whether an id repeats (the within-file dedupe is skipped when none does) and the customers. The insert then validates as it goes; the
        valid rows are counted (a second validation pass) and the bad ones worded only when it stored fewer
        rows than the source has.
        """
        has_customer = "customer_id" in kind.columns
        customers = (
            "list(DISTINCT customer_id) FILTER (WHERE customer_id IS NOT NULL)" if has_customer else "NULL"
        )
        # an empty table needs no range check: count the distinct ids in the same scan
        empty = not self.store.may_hold(cur, kind, None)
        distinct = f"count(event_id), {DISTINCT_IDS}" if empty or self._small else "NULL, NULL"
        total, lo, hi, cids, n_ids, n_distinct = cur.execute(
            f"SELECT count(*), min(event_id), max(event_id), {customers}, {distinct} FROM ({ids})"
        ).fetchall()[0]
        if total == 0 or (cids and self._unknown(list(cids))):
            return False
        stored = not empty and self.store.may_hold(cur, kind, (lo, hi) if lo is not None else None)
        if not stored and not empty and not self._small:
            # a new range: an exact distinct count is ~3x cheaper than the windowed dedupe it lets us skip;
            # with stored ids in range the anti-join leaves the window little to do anyway
            n_ids, n_distinct = cur.execute(
                f"SELECT count(event_id), {DISTINCT_IDS} FROM ({ids})"
            ).fetchall()[0]
        unique = not stored and n_ids == n_distinct
        new = self.store.insert_new(
            cur,
            kind,
            checked + "SELECT * FROM c WHERE __ok",
            first_by="__row",
            unique=unique,
            stored=stored,
        )
        ok = (
            total
            if new == total
            else cur.execute(checked + "SELECT count(*) FILTER (WHERE __ok) FROM c").fetchall()[0][0]
        )
        report.rows_read += total
        report.rejected += total - ok
        report.new += new
        report.duplicate += ok - new
        if total > ok and len(report.errors) < MAX_ERRORS:
            full = f"WITH c AS ({errors_from}) " if errors_from else checked
            self._errors(cur, report, kind, full, "__ok", None)
        if strict and report.rejected:
            return True  # the file will be rolled back
        if kind.name in TICKET_COLUMNS:
            cols = TICKET_COLUMNS[kind.name]
            tickets.append(cur.sql(checked + f"SELECT {cols} FROM c WHERE __ok").to_arrow_table())
        return True

    def _errors(
        self,
        cur: duckdb.DuckDBPyConnection,
        report: SourceReport,
        kind: SignalKind,
        checked: str,
        keep: str,
        unknown_view: str | None,
    ) -> None:
        codes = [f"__e_{f.name}" for f in kind.all_fields]
        raws = [f"__raw_{f.name}" for f in kind.all_fields]
        malformed = "__malformed" if self._malformed_col else "NULL"
        unk = f"(__ok AND customer_id IN (SELECT id FROM {unknown_view}))" if unknown_view else "FALSE"
        sql = (
            checked + f"SELECT __row, {malformed}, {unk}, {', '.join(q(c) for c in codes + raws)} FROM c "
            f"WHERE NOT ({keep}) ORDER BY __row LIMIT {MAX_ERRORS - len(report.errors)}"
        )
        n = len(kind.all_fields)
        for row in cur.execute(sql).fetchall():
            line, text, is_unknown = row[0], row[1], row[2]
            if text is not None:
                report.add_error(RowError(report.source, line, "(row)", "a JSON object", text, "not JSON"))
                continue
            if is_unknown:
                msg, expected = describe(kind, "customer_id", UNKNOWN_CUSTOMER)
                got = row[3 + n + kind.columns.index("customer_id")]
                report.add_error(RowError(report.source, line, "customer_id", expected, got, msg))
                continue
            for i, f in enumerate(kind.all_fields):
                code = row[3 + i]
                if code is not None:
                    msg, expected = describe(kind, f.name, code)
                    got = None if code == MISSING else row[3 + n + i]
                    report.add_error(RowError(report.source, line, f.name, expected, got, msg))

    def _unknown(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` the state store does not know (looked up once per run)."""
        shared = known_customer_cache(self.ctx.engine)
        missing = list(set(ids) - shared - self.known)  # set differences run in C, over the few ids
        if not missing:
            return set()
        found = entities.known_customers(self.ctx.engine, missing)
        self.known.update(found)
        self._remember(found)
        return set(missing) - found

    def _remember(self, ids: Iterable[str]) -> None:
        """Add ids now stored in the state store to the shared cache (never ids merely planned)."""
        shared = known_customer_cache(self.ctx.engine)
        if len(shared) > KNOWN_MAX:
            shared.clear()
        shared.update(ids)


def unregister_view(cur: duckdb.DuckDBPyConnection, view: str) -> None:
    # after a failed statement the transaction is aborted and unregistering fails too; the error that
    # matters is the first one, already on its way up
    with suppress(duckdb.Error):
        cur.unregister(view)


class _Progress:
    """Drives a progress bar: by chunk for chunked reads, by DuckDB's own query progress within a chunk."""

    def __init__(self, update: Callable[[int], Any]) -> None:
        self.update, self.done = update, 0

    @contextmanager
    def watch(self, cur: duckdb.DuckDBPyConnection, step: int) -> Iterator[None]:
        stop = threading.Event()
        seen = [0.0]

        def poll() -> None:
            # a chunk runs several queries (validate, insert) each reporting 0..100%: show a monotone blend
            while not stop.wait(0.25):
                try:
                    pct = cur.query_progress()
                except duckdb.Error:
                    return
                if pct >= 0:
                    seen[0] = max(seen[0], min(0.99, seen[0] + (pct / 100 - seen[0]) * 0.5))
                    self.update(self.done + int(step * seen[0]))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.done += step
            self.update(self.done)


# -- progress ---------------------------------------------------------------------------------------------


def _progress_bar() -> Any:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn()
    )
