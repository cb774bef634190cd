"""What every trip wire shares: the findings frame it returns and the contract it keeps.

A trip wire is a pure function ``(frames, params, as_of) -> findings``:

- ``frames`` maps a signal kind to a Polars frame of that kind (see ``forewarn.signals.schema``) for a set of
  customers (one bucket at a time when run at scale);
- it uses only rows with ``ts <= as_of`` (point-in-time: data added later never changes a finding at ``as_of``);
- it scores from trailing windows and returns a frame with ``FINDINGS_SCHEMA``: one row per
  (customer, condition) that is firing at ``as_of``.

The same function serves live runs (recent tail), backtests (every ``as_of`` over history) and scale-out
(Spark's ``applyInArrow`` per customer bucket).

>>> empty_findings().columns[:4]
['customer_id', 'kind', 'condition', 'ts']
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar

import polars as pl

FINDINGS_SCHEMA = pl.Schema(
    {
        "customer_id": pl.String(),
        "kind": pl.String(),  # the trip wire: usage, cadence, billing, devices, schedule, opportunity
        "condition": pl.String(),  # what exactly, stable across runs: "usage:drop:data_gb", "device:D1"
        "ts": pl.Datetime("us", "UTC"),  # as_of of the detection (the data time, not wall-clock)
        "score": pl.Float64(),  # how far outside normal, detector-specific but monotone
        "confidence": pl.Float64(),  # 0..1, how sure (history length, consistency)
        "severity": pl.String(),  # info, warning, critical
        "topic": pl.String(),  # consent / ticket topic: usage, billing, device, account, shipping, offer
        "explanation": pl.String(),  # one sentence a customer could read
        "evidence": pl.String(),  # JSON object with the numbers behind it
    }
)


def empty_findings() -> pl.DataFrame:
    return pl.DataFrame(schema=FINDINGS_SCHEMA)


def as_findings(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``frame`` to ``FINDINGS_SCHEMA`` (raises if a column is missing)."""
    return frame.select([pl.col(name).cast(dtype) for name, dtype in FINDINGS_SCHEMA.items()])


def point_in_time(frame: pl.DataFrame, as_of: datetime, column: str = "ts") -> pl.DataFrame:
    """Only the rows known at ``as_of``: the one filter every trip wire applies first."""
    return frame.filter(pl.col(column) <= as_of)


@dataclass(frozen=True)
class Params:
    """Base for a trip wire's parameters: a frozen dataclass with documented, sensible defaults."""


P = TypeVar("P", bound=Params)


def params_with(defaults: type[P], wire: str, overrides: Mapping[str, Any]) -> P:
    """``defaults()`` with ``overrides`` applied; an unknown name is a clear error, not silently ignored.

    >>> @dataclass(frozen=True)
    ... class Demo(Params):
    ...     k: float = 3.0
    >>> params_with(Demo, "demo", {"k": 4.0}).k
    4.0
    >>> params_with(Demo, "demo", {"kk": 1})
    Traceback (most recent call last):
    ValueError: demo trip wire: unknown parameter(s) ['kk']; expected ['k']
    """
    known = {f.name for f in fields(defaults)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(
            f"{wire} trip wire: unknown parameter(s) {sorted(unknown)}; expected {sorted(known)}"
        )
    return replace(defaults(), **overrides)


class TripWire(Protocol):
    """A detector. ``kinds`` names the signal kinds it reads; ``detect`` is pure.

    Two optional methods let a live run read less than the whole history (the runner calls them through
    :func:`history_of` and :func:`backfill_of`, which supply the safe defaults when a wire has neither):

    - ``history()``: per kind, how far back before ``as_of`` a row can still change a finding at ``as_of``
      (None: any row can, read everything; the default for every kind);
    - ``backfill(frames, as_of, since, **context)``: after the windowed read (``since[kind]`` is where the read
      started, None when it read everything), the customers whose WHOLE history of a kind the wire needs
      after all (a need that is "N events back" or "since this series went quiet" rather than a time span).

    A wire's findings from the windowed frames, with every backfilled customer's full history in them, must
    equal its findings from everything; rows beyond what a wire asked for (another wire's wider window) must
    not change them either.

    ``score_history`` is required: backtests call it for every wire, with one signature (below).
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame: ...

    def score_history(
        self, frames: Mapping[str, pl.DataFrame], *, runs: Sequence[datetime] | None = None, **context: Any
    ) -> pl.DataFrame:
        """Every finding over the whole history in one pass, each stamped with the time it is found (``ts``).

        ``runs`` are the run times a backtest asks about (each day's run): a wire whose findings depend on
        the run time (overdue, expiring, due) reports at each of them, as ``detect`` at that run would; None
        means from the first to the last day of data. A wire that scores each data row as it arrives (usage,
        devices) reports at the rows' own times and does not need ``runs``. A wire with nothing faster can
        return :func:`detect_each_run`. Point-in-time like ``detect``: a finding at ``ts`` uses rows up to it.
        """
        ...


def detect_each_run(
    wire: TripWire, frames: Mapping[str, pl.DataFrame], runs: Sequence[datetime], **context: Any
) -> pl.DataFrame:
    """``score_history`` the slow, obviously right way: ``detect`` at every run, stacked (for a wire with
    nothing faster, and as the reference a faster one is tested against).

    >>> from datetime import UTC
    >>> class Flat:
    ...     name, kinds = "flat", ("usage",)
    ...     def detect(self, frames, as_of, **context):
    ...         row = {**dict.fromkeys(FINDINGS_SCHEMA), "customer_id": "c1", "kind": "flat", "ts": as_of}
    ...         return pl.DataFrame([row], schema=FINDINGS_SCHEMA)
    ...     def score_history(self, frames, *, runs=None, **context):
    ...         return detect_each_run(self, frames, runs or [], **context)
    >>> runs = [datetime(2026, 1, d, 9, tzinfo=UTC) for d in (1, 2)]
    >>> Flat().score_history({}, runs=runs)["ts"].dt.day().to_list()
    [1, 2]
    """
    parts = [as_findings(found) for as_of in runs if (found := wire.detect(frames, as_of, **context)).height]
    return pl.concat(parts) if parts else empty_findings()


def history_of(wire: Any) -> dict[str, timedelta | None]:
    """How far back before ``as_of`` ``wire`` reads each of its kinds: its ``history()``, None (everything)
    for a kind it does not name or when it has no ``history`` at all.

    >>> class Old:
    ...     kinds = ("usage", "invoice")
    >>> history_of(Old())
    {'usage': None, 'invoice': None}
    >>> class New(Old):
    ...     def history(self):
    ...         return {"usage": timedelta(days=3)}
    >>> history_of(New())
    {'usage': datetime.timedelta(days=3), 'invoice': None}
    """
    declared = wire.history() if hasattr(wire, "history") else {}
    return {kind: declared.get(kind) for kind in wire.kinds}


def widest_history(wires: Iterable[Any]) -> dict[str, timedelta | None]:
    """Per kind, the widest window any of ``wires`` needs (None wins: someone reads everything).

    >>> class A:
    ...     kinds = ("usage",)
    ...     def history(self):
    ...         return {"usage": timedelta(days=3)}
    >>> class B:
    ...     kinds = ("usage", "telemetry")
    ...     def history(self):
    ...         return {"usage": timedelta(days=9), "telemetry": timedelta(days=1)}
    >>> widest_history([A(), B()])["usage"].days, widest_history([A(), B()])["telemetry"].days
    (9, 1)
    >>> widest_history([A(), type("C", (), {"kinds": ("usage",)})()])
    {'usage': None}
    """
    out: dict[str, timedelta | None] = {}
    for wire in wires:
        for kind, window in history_of(wire).items():
            if kind not in out:
                out[kind] = window
            else:
                seen = out[kind]
                out[kind] = None if seen is None or window is None else max(seen, window)
    return out


def backfill_of(
    wire: Any,
    frames: Mapping[str, pl.DataFrame],
    as_of: datetime,
    since: Mapping[str, datetime | None],
    **context: Any,
) -> dict[str, Collection[str]]:
    """The customers (per kind) whose whole history ``wire`` needs besides the windowed read: its
    ``backfill(...)``, nothing when it has none. Only kinds that were read from a ``since`` are asked about."""
    if not hasattr(wire, "backfill"):
        return {}
    need = wire.backfill(frames, as_of, since, **context)
    return {kind: ids for kind, ids in need.items() if since.get(kind) is not None and len(ids)}
