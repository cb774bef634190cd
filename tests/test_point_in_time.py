"""Point-in-time honesty for every registered trip wire: data after ``as_of`` never changes findings at it.

The frames are generated from the signal schema (``forewarn.signals.schema.KINDS``), so any trip wire added to
the registry is covered as soon as its module exists, whatever kinds it reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.registry import TRIP_WIRES
from forewarn.detect.runner import load_wire
from forewarn.signals.schema import KINDS, SignalKind

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 120
CUSTOMERS = [f"c{i}" for i in range(12)]
ATTRIBUTES = ["smart_5_raw", "smart_187_raw", "smart_197_raw", "smart_198_raw", "temperature_c"]


def _value(kind: str, name: str, rng: np.random.Generator, cust: int, i: int, d: int) -> object:
    """A plausible, deterministic value for one field."""
    if name == "metric":
        return "data_gb" if kind == "usage" else ["error_rate", "requests"][i % 2]
    if name == "value" and kind == "usage":
        base = 2.0 + cust
        v = float(rng.normal(base, 0.1 * base))
        if (cust + d) % 37 == 0:
            v *= 6  # a spike now and then
        return 0.0 if cust == 3 and d > DAYS - 30 else max(0.0, v)
    if name == "value" and kind == "telemetry":
        return float(max(0, d - 60 - cust * 4) * (cust % 3))  # counters that start rising at various times
    if name == "device_id":
        return f"D{cust}"
    if name == "attribute":
        return ATTRIBUTES[i % len(ATTRIBUTES)]
    if name in ("invoice_id", "shipment_id"):
        return f"{name}-{cust}-{d}"
    if name == "service_id":
        return f"svc{cust % 2}"
    if name == "region":
        return ["eu", "us"][cust % 2]
    if name == "currency":
        return "EUR"
    return None


def _frame(kind: SignalKind, every: int, rng: np.random.Generator) -> pl.DataFrame:
    rows: list[dict] = []
    for cust, cid in enumerate(CUSTOMERS):
        for d in range(0, DAYS, every):
            reps = len(ATTRIBUTES) if kind.name == "telemetry" else 1
            for i in range(reps):
                ts = T0 + timedelta(days=d, hours=cust % 5)
                if kind.name == "usage":
                    ts = T0 + timedelta(days=d)
                row: dict = {"event_id": f"{kind.name}-{cid}-{d}-{i}", "customer_id": cid, "ts": ts}
                for f in kind.fields:
                    special = _value(kind.name, f.name, rng, cust, i, d)
                    if special is not None:
                        row[f.name] = special
                    elif f.choices:
                        row[f.name] = f.choices[(cust + d + i) % len(f.choices)]
                    elif f.type == "float":
                        row[f.name] = float(round(rng.gamma(2.0, 20.0 + cust), 2))
                    elif f.type == "int":
                        row[f.name] = int(rng.integers(0, 100))
                    elif f.type == "bool":
                        row[f.name] = bool((cust + d) % 2)
                    elif f.type == "date":
                        row[f.name] = (ts + timedelta(days=int(rng.integers(-5, 40)))).date()
                    elif f.type == "lines":
                        amt = float(round(rng.gamma(2.0, 10.0), 2))
                        lines = [{"code": "base", "description": "Plan", "amount": 30.0, "quantity": 1.0}]
                        if (cust + d) % 5 == 0:
                            lines.append(
                                {"code": "roaming", "description": "Roaming", "amount": amt, "quantity": 1.0}
                            )
                        row[f.name] = lines
                    elif f.type == "timestamp":
                        row[f.name] = ts
                    else:
                        row[f.name] = f"{f.name}-{(cust + d) % 3}"
                rows.append(row)
    frame = pl.DataFrame(rows, schema=kind.polars_schema)
    if "total" in frame.columns and "lines" in frame.columns:
        frame = frame.with_columns(
            total=pl.col("lines").list.eval(pl.element().struct.field("amount")).list.sum()
        )
    return frame


def frames_for(kinds: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(11)
    every = {"usage": 1, "telemetry": 2, "service_metric": 1}
    return {k: _frame(KINDS[k], every.get(k, 9), rng) for k in kinds}


def future_rows(frame: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Rows after ``as_of`` that would change everything if they leaked: huge values, new ids."""
    later = frame.filter(pl.col("ts") <= as_of).tail(200)
    shift = (as_of - later["ts"].min()) + timedelta(hours=1)
    out = later.with_columns(pl.col("ts") + shift, ("future-" + pl.col("event_id")).alias("event_id"))
    for col, dtype in out.schema.items():
        if dtype == pl.Float64():
            out = out.with_columns(pl.col(col) * 1000 + 1)
    return out


def context() -> dict[str, pl.DataFrame]:
    customers = pl.DataFrame(
        {
            "customer_id": CUSTOMERS,
            "plan": ["basic", "plus"] * 6,
            "region": ["eu", "us"] * 6,
            "timezone": ["UTC"] * 12,
            "segment": [None] * 12,
            "attributes": ["{}"] * 12,
        },
        schema_overrides={"segment": pl.String},
    )
    deps = pl.DataFrame(
        {"customer_id": CUSTOMERS, "service_id": ["svc0", "svc1"] * 6, "region": ["eu", "us"] * 6}
    )
    return {"customers": customers, "dependencies": deps}


def _sorted(f: pl.DataFrame) -> pl.DataFrame:
    return f.sort("customer_id", "condition")


@pytest.mark.parametrize("name", sorted(TRIP_WIRES))
def test_data_after_as_of_never_changes_findings(name: str) -> None:
    wire = load_wire(name)
    if wire is None:
        pytest.skip(f"trip wire {name} not written yet")
    frames = frames_for(wire.kinds)
    ctx = context()
    fired_somewhere = False
    for as_of in (T0 + timedelta(days=70, hours=12), T0 + timedelta(days=100), T0 + timedelta(days=DAYS - 1)):
        cut = {k: f.filter(pl.col("ts") <= as_of) for k, f in frames.items()}
        grown = {k: pl.concat([f, future_rows(f, as_of)]) for k, f in frames.items()}
        base = wire.detect(cut, as_of, **ctx)
        assert base.schema == FINDINGS_SCHEMA
        assert _sorted(wire.detect(frames, as_of, **ctx)).equals(_sorted(base)), f"{name} @ {as_of}: full"
        assert _sorted(wire.detect(grown, as_of, **ctx)).equals(_sorted(base)), f"{name} @ {as_of}: grown"
        fired_somewhere |= base.height > 0
    if name in ("usage", "devices"):
        assert fired_somewhere, "the generated data should make this trip wire fire at least once"


@pytest.mark.parametrize("name", ["usage", "devices"])
def test_live_detection_equals_history_scoring(name: str) -> None:
    wire = load_wire(name)
    frames = frames_for(wire.kinds)
    hist = wire.score_history(frames)
    assert hist.height > 0
    for d in (80, 95, 110, DAYS - 1):
        as_of = T0 + timedelta(days=d, hours=4 if name == "devices" else 0)
        live = wire.detect(frames, as_of).drop("ts")
        if name == "devices":  # a device's latest reading at or before as_of, within the staleness limit
            latest = (
                pl.concat([f for f in frames.values()])
                .filter(pl.col("ts") <= as_of)
                .group_by("device_id")
                .agg(pl.col("ts").max())
            )
            want = hist.join(
                latest.select(pl.format("device:{}", "device_id").alias("condition"), pl.col("ts")),
                on=["condition", "ts"],
            )
        else:
            want = hist.filter(pl.col("ts") == as_of)
        assert _sorted(live).equals(_sorted(want.drop("ts"))), f"{name} day {d}"
