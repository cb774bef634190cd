"""Running the enabled trip wires once: read signals, detect at ``as_of``, write findings.

``run_detection`` reads each signal kind the selected trip wires need from the signal store (once per kind,
only rows at or before ``as_of``), builds the context frames from the state store (customers, dependencies,
services),
calls every trip wire's ``detect`` and reconciles its findings with the open ones
(``findings_store.sync_findings``).
A trip wire whose module is not installed yet is skipped with a warning, not an error, so the runner works
while the set of trip wires grows.

>>> WireReport("usage", "skipped", "module missing").firing
0
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from typing import Any

import polars as pl
from sqlalchemy import select

from forewarn.detect.base import FINDINGS_SCHEMA, as_findings, point_in_time
from forewarn.detect.findings_store import SyncResult, sync_findings
from forewarn.detect.registry import TRIP_WIRES
from forewarn.state.models import Customer, Dependency, Service

log = logging.getLogger(__name__)

Reader = Callable[[str, datetime | None], pl.DataFrame]


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
    """Reads one kind from ``ctx.signals`` up to ``as_of`` (everything when ``as_of`` is None)."""

    def read(kind: str, as_of: datetime | None) -> pl.DataFrame:
        return ctx.signals.read(kind, end=as_of)

    return read


def _latest_ts(frames: Mapping[str, pl.DataFrame]) -> datetime | None:
    latest = [f["ts"].max() for f in frames.values() if f.height and "ts" in f.columns]
    latest = [t for t in latest if t is not None]
    return max(latest) if latest else None


def run_detection(
    ctx: Any,
    as_of: datetime | None = None,
    wires: Sequence[str] | None = None,
    *,
    frames: Mapping[str, pl.DataFrame] | None = None,
    reader: Reader | None = None,
    examples: int = 3,
) -> RunReport:
    """Run the trip wires ``wires`` (default: all registered) at ``as_of`` and write their findings.

    ``as_of`` defaults to the latest signal time in the data read (the data's "now", so a replayed or
    simulated history is judged at its own end). Signals come from ``frames`` when given (tests,
    benchmarks), else from ``reader`` / ``ctx.signals``.
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
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    data: dict[str, pl.DataFrame] = {}
    read = reader or (None if frames is not None else store_reader(ctx))
    for kind in kinds:
        if frames is not None:
            frame = frames.get(kind)
            if frame is not None:
                data[kind] = frame if as_of is None else point_in_time(frame, as_of)
        elif read is not None:
            data[kind] = read(kind, as_of)
    if as_of is None:
        as_of = _latest_ts(data) or datetime.now(UTC)
    context = {
        "customers": customers_frame(ctx),
        "dependencies": dependencies_frame(ctx),
        "services": services_frame(ctx),
    }
    for name, wire in loaded.items():
        t0 = time.perf_counter()
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
