"""Group commit for API batches: concurrent batches are validated together and stored in one insert.

A small API batch (1,000 events) costs mostly fixed work: planning the validation SQL, the insert, the
transaction. :func:`ingest_batch` queues each batch; whichever caller finds the store free validates and inserts
every batch queued so far as one group (DuckDB has one writer anyway), and each caller gets its own exact
report: its new, duplicate and rejected counts, its errors numbered by its own index, and, for a strict batch
with a bad event, nothing stored from it. Events are idempotent by ``event_id``; within a group the first
occurrence in order of arrival wins, as if the batches had been sent one after another.

Batches the group path does not cover (no ``kind``, contacts (which open tickets), invoices, values that are
not scalars) and groups naming a customer the state store does not know go through
:func:`forewarn.signals.ingest.ingest_records` one by one, with the same results.

>>> import tempfile, pathlib
>>> from forewarn.config import Settings
>>> from forewarn.context import Context
>>> from forewarn.state.db import upgrade
>>> home = pathlib.Path(tempfile.mkdtemp())
>>> upgrade(f"sqlite:///{home}/state.db")
>>> ctx = Context(Settings(home=home, unknown_customers="create"))
>>> ev = {"event_id": "e1", "customer_id": "c1", "ts": "2026-01-01", "metric": "data_gb", "value": 2}
>>> r = ingest_batch(ctx, "usage", [ev, {**ev, "event_id": "e2", "value": "lots"}], strict=False)
>>> (r.new, r.duplicate, r.rejected, r.errors[0].line, r.errors[0].field)
(1, 0, 1, 1, 'value')
>>> r = ingest_batch(ctx, "usage", [ev], strict=True)
>>> (r.new, r.duplicate, r.rejected)
(0, 1, 0)
>>> ctx.close()
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from forewarn.signals.ingest import (
    MAX_ERRORS,
    IngestReport,
    IngestSession,
    RecordsReader,
    SourceReport,
    ingest_records,
    known_customer_cache,
    preload_known_customers,
    record_columns,
    unregister_view,
)
from forewarn.signals.schema import KINDS, SignalKind
from forewarn.signals.validate import checked_sql, q

if TYPE_CHECKING:  # the context bundles the stores; signals is below it
    from forewarn.context import Context

# a DB-API result read as Arrow costs one more small statement; reading it through a relation would plan
# the (large) validation query twice, which costs more
warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning, r"forewarn\.signals\.group")

GROUP_ROWS = 50_000  # events per group at most: bounds a group's memory and its callers' wait
# how long a leader waits for the batches on their way (see Arrival) to join its group: reading and converting
# one takes a few ms, and the GIL lets only one thread work at a time anyway
GATHER_SECONDS = 0.01
# kinds the group path does not cover: contacts open tickets, updates move them, invoice lines are nested
SOLO_KINDS = {
    k.name for k in KINDS.values() if k.name in ("contact", "ticket_update") or "lines" in k.columns
}


def ingest_batch(
    ctx: Context,
    kind: str | None,
    records: Sequence[dict[str, Any]],
    *,
    strict: bool,
    source: str = "api",
    arrival: Arrival | None = None,
) -> IngestReport:
    """Ingest one API batch like :func:`~forewarn.signals.ingest.ingest_records`, grouped with the batches
    other threads are ingesting at the same time (see the module docstring). ``arrival``: the batch's
    :class:`Arrival`, when the caller announced it before it had the records."""
    arrival = arrival or Arrival(ctx)
    try:
        if kind not in KINDS or kind in SOLO_KINDS or not records:
            arrival.close()
            return ingest_records(ctx, kind, records, source=source, strict=strict)
        table = record_columns(records, kind)
        if table is None:
            arrival.close()
            return ingest_records(ctx, kind, records, source=source, strict=strict)
        return _committer(ctx).submit(_Pending(kind, table, strict, source), arrival)  # type: ignore[arg-type]
    finally:
        arrival.close()


class Arrival:
    """A batch on its way (its body being read, parsed, converted): a leader about to run a group waits
    (at most ``GATHER_SECONDS``) for the batches on their way to be queued, so that they join its group.
    Closed once the batch is queued, or known not to be; closing again does nothing.

    >>> import tempfile, pathlib
    >>> from forewarn.config import Settings
    >>> from forewarn.context import Context
    >>> ctx = Context(Settings(home=pathlib.Path(tempfile.mkdtemp())))
    >>> a = Arrival(ctx)
    >>> _committer(ctx)._arriving
    1
    >>> a.close(); a.close(); _committer(ctx)._arriving
    0
    """

    def __init__(self, ctx: Context) -> None:
        self._committer = _committer(ctx)
        with self._committer._queue_lock:
            self._committer._arriving += 1
        self._open = True

    def close(self) -> None:
        with self._committer._queue_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._open:
            self._open = False
            self._committer._arriving -= 1
            self._committer._queue_lock.notify_all()


@dataclass(eq=False)
class _Pending:
    """One queued batch and, once its group ran, its report (or the error that failed the group)."""

    kind: str
    table: pa.Table  # as record_columns gives it: __row (0-based index), the kind's columns
    strict: bool
    source: str
    report: SourceReport | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return self.table.num_rows


_COMMITTERS: weakref.WeakKeyDictionary[Context, _GroupCommit] = weakref.WeakKeyDictionary()
_COMMITTERS_LOCK = threading.Lock()


def _committer(ctx: Context) -> _GroupCommit:
    with _COMMITTERS_LOCK:
        c = _COMMITTERS.get(ctx)
        if c is None:
            c = _COMMITTERS[ctx] = _GroupCommit(ctx)
        return c


class _GroupCommit:
    """The queue of one context's batches. No thread of its own: the caller that gets the leader lock runs
    everything queued (its own batch included, unless an earlier leader already took it)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Condition()
        self._arriving = 0  # batches on their way (Arrival), about to be queued
        self._leader = threading.Lock()
        self._many_customers = False  # too many to keep every id in memory: look each batch's up

    def _preload(self) -> None:
        if not self._many_customers and not known_customer_cache(self.ctx.engine):
            self._many_customers = not preload_known_customers(self.ctx.engine)

    def submit(self, item: _Pending, arrival: Arrival) -> IngestReport:
        with self._queue_lock:
            self._queue.append(item)
            arrival._close_locked()
        while not item.done.is_set():
            with self._leader:
                if item.done.is_set():
                    break
                with self._queue_lock:
                    self._queue_lock.wait_for(lambda: self._arriving == 0, GATHER_SECONDS)
                    group, rows = [], 0
                    while self._queue and (not group or rows + self._queue[0].rows <= GROUP_ROWS):
                        rows += self._queue[0].rows
                        group.append(self._queue.pop(0))
                self._run(group)
        if item.error is not None:
            raise item.error
        assert item.report is not None
        return IngestReport([item.report])

    def _run(self, group: list[_Pending]) -> None:
        try:
            # per kind (kinds are stored apart), runs of batches whose columns convert alike (a number field
            # sent as text is rare): each run is one concatenation, and runs keep the order of arrival
            runs: dict[str, list[list[_Pending]]] = {}
            for it in group:
                same = runs.setdefault(it.kind, [])
                if same and same[-1][0].table.schema.equals(it.table.schema):
                    same[-1].append(it)
                else:
                    same.append([it])
            for kind, kind_runs in runs.items():
                for items in kind_runs:
                    if not self._together(KINDS[kind], items):
                        for it in items:  # an unknown customer: the general path words or creates it
                            it.report = self._alone(it)
        except BaseException as e:  # every caller of the group sees the failure
            for it in group:
                if it.report is None:
                    it.error = e
        finally:
            for it in group:
                it.done.set()

    def _alone(self, item: _Pending) -> SourceReport:
        session = IngestSession(self.ctx, self.ctx.settings.unknown_customers)
        reader = RecordsReader(Path(item.source), item.table.schema)
        return session.ingest(
            item.source, item.kind, reader, iter([(item.table, item.rows)]), strict=item.strict
        )

    def _together(self, kind: SignalKind, items: list[_Pending]) -> bool:
        """Validate and store ``items`` in one transaction; False (nothing done) when a customer is unknown."""
        sizes = np.array([it.rows for it in items], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        # __row numbers the group's events in order of arrival (first occurrence wins by it)
        table = pa.concat_tables([it.table.drop_columns("__row") for it in items])
        table = table.add_column(0, "__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        session = IngestSession(self.ctx, self.ctx.settings.unknown_customers)
        session._malformed_col = True
        store = self.ctx.signals
        view = f"__group_{id(table):x}"
        with store.transaction() as cur:
            cur.register(view, table)
            try:
                src = f"SELECT * FROM {view}"
                types = RecordsReader(Path("api"), table.schema).source_types(view, kind.columns)
                full = checked_sql(kind, src, types)  # type: ignore[arg-type]
                cols = ", ".join(q(c) for c in kind.columns)
                checked = cur.execute(f"SELECT __row, {cols}, __ok FROM ({full})").to_arrow_table()
                row = checked["__row"].to_numpy()
                ok = checked["__ok"].to_numpy(zero_copy_only=False)
                batch = np.searchsorted(starts, row, side="right") - 1
                if "customer_id" in kind.columns:
                    self._preload()
                    ids = pc.unique(checked["customer_id"].filter(pa.array(ok))).drop_null().to_pylist()
                    if session._unknown(ids):
                        return False
                good = np.bincount(batch[ok], minlength=len(items))
                strict = np.array([it.strict for it in items])
                accepted = ~(strict & (good < sizes))
                reports = [SourceReport(it.source, it.kind, rows_read=it.rows) for it in items]
                for b in np.flatnonzero(good < sizes):
                    self._word_errors(cur, session, kind, full, reports[b], int(starts[b]), int(sizes[b]))
                keep = ok & accepted[batch]
                new = self._insert(cur, kind, checked.filter(pa.array(keep)), batch[keep], len(items))
            finally:
                unregister_view(cur, view)
        for b, (it, r) in enumerate(zip(items, reports, strict=True)):
            r.rejected = int(sizes[b] - good[b])
            if accepted[b]:
                r.new, r.duplicate = int(new[b]), int(good[b] - new[b])
            else:
                r.note = f"strict: {r.rejected} bad row(s), nothing from this source was stored"
                r.rejected = it.rows
            it.report = r
        return True

    @staticmethod
    def _word_errors(
        cur: Any,
        session: IngestSession,
        kind: SignalKind,
        full: str,
        report: SourceReport,
        start: int,
        n: int,
    ) -> None:
        """The errors of one batch of the group, numbered by the batch's own index."""
        keep = f"(__ok OR __row NOT BETWEEN {start} AND {start + n - 1})"
        session._errors(cur, report, kind, f"WITH c AS ({full}) ", keep, None)
        report.errors = [replace(e, line=e.line - start) for e in report.errors[:MAX_ERRORS]]  # type: ignore[operator]

    @staticmethod
    def _insert(cur: Any, kind: SignalKind, rows: pa.Table, batch: np.ndarray, n_batches: int) -> np.ndarray:
        """Insert the first row of each new ``event_id`` of ``rows`` (in ``__row`` order); per batch, how
        many were stored."""
        if rows.num_rows == 0:
            return np.zeros(n_batches, dtype=np.int64)
        frame = pl.from_arrow(rows).with_columns(__batch=pl.Series(batch))  # type: ignore[union-attr]
        firsts = frame.sort("__row").unique("event_id", keep="first", maintain_order=True).to_arrow()
        view = f"__firsts_{id(firsts):x}"
        cur.register(view, firsts)
        try:
            cols = ", ".join(q(c) for c in kind.columns)
            stored = cur.execute(
                f"INSERT INTO {kind.table} ({cols}) SELECT {cols} FROM {view} "
                f"ANTI JOIN {kind.table} AS old USING (event_id) RETURNING event_id"
            ).fetchnumpy()["event_id"]
        finally:
            unregister_view(cur, view)
        inserted = pc.is_in(firsts["event_id"], value_set=pa.array(stored, pa.string())).to_numpy(
            zero_copy_only=False
        )
        return np.bincount(firsts["__batch"].to_numpy()[inserted], minlength=n_batches)
