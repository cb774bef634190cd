"""Running the enabled trip wires once: read signals, detect at ``as_of``, write findings.

``run_detection`` reads each signal kind the selected trip wires need from the signal store (once per kind,
only rows at or before ``as_of``, and only as far back as the widest ``history()`` any of them declares, plus
the whole history of the customers a wire's ``backfill`` asks for: see ``forewarn.detect.base.TripWire``), so
a pass costs what the trip wires can depend on, not all history. It builds the context frames from the state
store (customers, dependencies, services), calls every trip wire's ``detect`` and reconciles its findings with
the open ones (``findings_store.sync_findings``).
A trip wire whose module is not installed yet is skipped with a warning, not an error, so the runner works
while the set of trip wires grows.

>>> WireReport("usage", "skipped", "module missing").firing
0
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from typing import Any, Protocol

import polars as pl
from sqlalchemy import select

from forewarn.detect.base import FINDINGS_SCHEMA, as_findings, backfill_of, widest_history
from forewarn.detect.findings_store import SyncResult, sync_findings
from forewarn.detect.registry import TRIP_WIRES
from forewarn.state.models import Customer, Dependency, Service

log = logging.getLogger(__name__)


class Reader(Protocol):
    """Reads one kind's rows with ``start <= ts <= end`` (None: unbounded), of ``customers`` when given
    (None: all), in the signal store's order (customer, ts, event_id); None when there is no such kind."""

    def __call__(
        self,
        kind: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        customers: Sequence[str] | None = None,
    ) -> pl.DataFrame | None: ...


@dataclass
class WireReport:
    name: str
    status: str  # ok, skipped, error
    message: str = ""
    firing: int = 0
    opened: int = 0
    updated: int = 0
    closed: int = 0
    skipped_unknown: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    as_of: datetime
    wires: list[WireReport]
    seconds: float = 0.0

    def wire(self, name: str) -> WireReport:
        return next(w for w in self.wires if w.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def load_wire(name: str) -> Any | None:
    """The trip wire ``name`` with default parameters, or None when its module does not exist (yet)."""
    target = TRIP_WIRES.get(name)
    if target is None:
        raise ValueError(f"unknown trip wire {name!r}; expected one of {', '.join(TRIP_WIRES)}")
    module, cls = target.split(":")
    try:
        mod = import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, cls)()


def customers_frame(ctx: Any) -> pl.DataFrame:
    """Customers from the state store: customer_id, plan, region, timezone, segment, attributes (JSON)."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(
                Customer.id,
                Customer.plan,
                Customer.region,
                Customer.timezone,
                Customer.segment,
                Customer.attributes,
            )
        ).all()
    schema = {
        "customer_id": pl.String,
        "plan": pl.String,
        "region": pl.String,
        "timezone": pl.String,
        "segment": pl.String,
        "attributes": pl.String,
    }
    data = [(r[0], r[1], r[2], r[3], r[4], json.dumps(r[5] or {})) for r in rows]
    return pl.DataFrame(data, schema=schema, orient="row")


def dependencies_frame(ctx: Any) -> pl.DataFrame:
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(Dependency.customer_id, Dependency.service_id, Dependency.region)).all()
    schema = {"customer_id": pl.String, "service_id": pl.String, "region": pl.String}
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def services_frame(ctx: Any) -> pl.DataFrame:
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(Service.id, Service.name)).all()
    return pl.DataFrame([tuple(r) for r in rows], schema={"id": pl.String, "name": pl.String}, orient="row")


def store_reader(ctx: Any) -> Reader:
    """Reads from ``ctx.signals`` (a ``SignalStore``)."""

    def read(
        kind: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        customers: Sequence[str] | None = None,
    ) -> pl.DataFrame | None:
        return ctx.signals.read(kind, start=start, end=end, customers=customers)

    return read


def frames_reader(frames: Mapping[str, pl.DataFrame]) -> Reader:
    """Reads from in-memory frames as the signal store would (tests, benchmarks): the same filters, in the
    frame's own order.

    >>> from datetime import timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> f = pl.DataFrame({"customer_id": ["a", "a", "b"], "ts": [t0, t0 + timedelta(days=2), t0]})
    >>> read = frames_reader({"usage": f})
    >>> read("usage", start=t0 + timedelta(days=1)).height, read("usage", customers=["b"]).height
    (1, 1)
    >>> read("invoice") is None
    True
    """

    def read(
        kind: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        customers: Sequence[str] | None = None,
    ) -> pl.DataFrame | None:
        frame = frames.get(kind)
        if frame is None:
            return None
        cond = pl.lit(True)
        if start is not None:
            cond = cond & (pl.col("ts") >= start)
        if end is not None:
            cond = cond & (pl.col("ts") <= end)
        if customers is not None:
            cond = cond & pl.col("customer_id").is_in(pl.Series(list(customers), dtype=pl.String).implode())
        return frame.filter(cond)

    return read


def _latest_ts(frames: Mapping[str, pl.DataFrame]) -> datetime | None:
    latest = [f["ts"].max() for f in frames.values() if f.height and "ts" in f.columns]
    latest = [t for t in latest if t is not None]
    return max(latest) if latest else None


def _with_full_history(window: pl.DataFrame, full: pl.DataFrame, customers: Collection[str]) -> pl.DataFrame:
    """``window`` with the rows of ``customers`` replaced by their whole history ``full``, in store order."""
    ids = pl.Series(list(customers), dtype=pl.String).implode()
    rest = window.filter(~pl.col("customer_id").is_in(ids))
    order = [c for c in ("customer_id", "ts", "event_id") if c in window.columns]
    return pl.concat([rest, full.select(window.columns)]).sort(order, maintain_order=True)


def read_signals(
    read: Reader,
    wires: Sequence[Any],
    as_of: datetime,
    *,
    full_history: bool = False,
    **context: Any,
) -> tuple[dict[str, pl.DataFrame], dict[str, datetime | None]]:
    """The frames ``wires`` need at ``as_of``, and per kind where the read started (None: everything).

    Each kind is read once, from ``as_of`` minus the widest window any of ``wires`` declares (``history()``)
    to ``as_of``; then each wire's ``backfill`` names customers whose whole history of a kind it needs after
    all, and those are read again without a start. ``full_history`` reads everything (the reference the
    windowed read must equal). ``context`` (customers, ...) is passed to ``backfill``.
    """
    windows = widest_history(wires)
    since = {k: None if full_history or w is None else as_of - w for k, w in windows.items()}
    data: dict[str, pl.DataFrame] = {}
    for kind in sorted(windows):
        frame = read(kind, start=since[kind], end=as_of)
        if frame is not None:
            data[kind] = frame
    need: dict[str, set[str]] = {}
    for wire in wires:
        own = {k: data[k] for k in wire.kinds if k in data}
        for kind, ids in backfill_of(wire, own, as_of, since, **context).items():
            need.setdefault(kind, set()).update(ids)
    for kind, ids in sorted(need.items()):
        if kind in data and ids:
            more = read(kind, end=as_of, customers=sorted(ids))
            if more is not None:
                data[kind] = _with_full_history(data[kind], more, ids)
    return data, since


def run_detection(
    ctx: Any,
    as_of: datetime | None = None,
    wires: Sequence[str] | None = None,
    *,
    frames: Mapping[str, pl.DataFrame] | None = None,
    reader: Reader | None = None,
    examples: int = 3,
    full_history: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the trip wires ``wires`` (default: all registered) at ``as_of`` and write their findings.

    ``as_of`` defaults to the latest signal time of the kinds they read (the data's "now", so a replayed or
    simulated history is judged at its own end). Signals come from ``frames`` when given (tests,
    benchmarks), else from ``reader`` / ``ctx.signals``; only the window the trip wires declare is read
    (:func:`read_signals`), everything with ``full_history`` (the same findings, slower). ``progress`` is
    called with "reading signals", then each trip wire's name, as each starts (a progress bar).
    """
    started = time.perf_counter()
    names = list(wires) if wires else list(TRIP_WIRES)
    loaded: dict[str, Any] = {}
    reports: dict[str, WireReport] = {}
    for name in names:
        wire = load_wire(name)
        if wire is None:
            log.warning("trip wire %s skipped: its module is not there yet", name)
            reports[name] = WireReport(name, "skipped", "module not available")
        else:
            loaded[name] = wire
    kinds = sorted({k for w in loaded.values() for k in w.kinds})
    if frames is not None:
        read = frames_reader(frames)
        if as_of is None:
            as_of = _latest_ts({k: f for k, f in frames.items() if k in kinds})
    else:
        read = reader or store_reader(ctx)
        if as_of is None and reader is None:  # the store knows its latest time without a read
            ends = [span[1] for k in kinds if (span := ctx.signals.time_range(k)) is not None]
            as_of = max(ends) if ends else None
        elif as_of is None:
            as_of = _latest_ts({k: f for k in kinds if (f := read(k)) is not None})
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    context = {
        "customers": customers_frame(ctx),
        "dependencies": dependencies_frame(ctx),
        "services": services_frame(ctx),
    }
    if progress is not None:
        progress("reading signals")
    data, _ = read_signals(read, list(loaded.values()), as_of, full_history=full_history, **context)
    for name, wire in loaded.items():
        t0 = time.perf_counter()
        if progress is not None:
            progress(name)
        try:
            found = wire.detect({k: data[k] for k in wire.kinds if k in data}, as_of, **context)
            found = as_findings(found) if found.height else pl.DataFrame(schema=FINDINGS_SCHEMA)
            result: SyncResult = sync_findings(ctx.engine, wire.name, found, as_of)
        except Exception as exc:  # one broken trip wire must not stop the others
            log.exception("trip wire %s failed", name)
            reports[name] = WireReport(name, "error", f"{type(exc).__name__}: {exc}")
            continue
        reports[name] = WireReport(
            name,
            "ok",
            "as_of is before this trip wire's latest run: nothing written" if result.stale else "",
            firing=found.height,
            opened=result.opened,
            updated=result.updated,
            closed=result.closed,
            skipped_unknown=result.skipped_unknown,
            seconds=round(time.perf_counter() - t0, 3),
            examples=found.sort("score", descending=True)["explanation"].head(examples).to_list(),
        )
    ordered = [reports[n] for n in names]
    return RunReport(as_of=as_of, wires=ordered, seconds=round(time.perf_counter() - started, 3))
