"""Windowed reads: the runner reads only the history the trip wires declare, and finds exactly what a read of
everything finds (same conditions, scores, evidence, explanations), on simulated worlds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.detect.base import widest_history
from forewarn.detect.registry import TRIP_WIRES
from forewarn.detect.runner import frames_reader, load_wire, read_signals, run_detection
from forewarn.measure.backtest import data_from_world
from forewarn.sim.world import SimConfig, simulate
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Customer

DAYS = 120


@pytest.fixture(scope="module", params=[5, 29])
def world(request: pytest.FixtureRequest) -> tuple[dict[str, pl.DataFrame], dict[str, Any], datetime]:
    sim = simulate(SimConfig(customers=300, days=DAYS, seed=request.param))
    data = data_from_world(sim)
    context = {"customers": data.customers, "dependencies": data.dependencies, "services": sim.services}
    start = min(f["ts"].min() for f in data.frames.values() if f.height)
    return dict(data.frames), context, start


def _sorted(f: pl.DataFrame) -> pl.DataFrame:
    return f.sort("customer_id", "condition")


def _detect(wire: Any, frames: dict[str, pl.DataFrame], as_of: datetime, context: dict) -> pl.DataFrame:
    return _sorted(wire.detect({k: frames[k] for k in wire.kinds if k in frames}, as_of, **context))


def _cuts(wire: Any, as_of: datetime, start: datetime) -> bool:
    """Whether ``wire``'s declared window starts well after the world's first signal."""
    reach = wire.history()[wire.kinds[0]]
    return reach is not None and as_of - reach > start + timedelta(days=DAYS // 2)


def test_windowed_read_finds_what_a_full_read_finds(world) -> None:
    frames, context, start = world
    read = frames_reader(frames)
    wires = [load_wire(name) for name in TRIP_WIRES]
    fired: dict[str, int] = dict.fromkeys(TRIP_WIRES, 0)
    # early (windows reach before the first signal), mid and late; at midnight and mid-day (data lags as_of)
    for offset in (timedelta(days=40), timedelta(days=75, hours=13), timedelta(days=DAYS - 1, hours=9)):
        as_of = start + offset
        full, _ = read_signals(read, wires, as_of, full_history=True, **context)
        # all wires together (each gets the widest window of a kind), and each alone (its own, narrowest)
        together, since = read_signals(read, wires, as_of, **context)
        for wire in wires:
            alone, own = read_signals(read, [wire], as_of, **context)
            want = _detect(wire, full, as_of, context)
            fired[wire.name] += want.height
            assert_frame_equal(_detect(wire, together, as_of, context), want, check_exact=True)
            assert_frame_equal(_detect(wire, alone, as_of, context), want, check_exact=True)
            kind = wire.kinds[0]
            # the window is a real cut where the world is longer than the wire's reach (the usage wire's,
            # a held drop's, is longer than this world: tests/test_detect_usage.py cuts a longer one)
            if offset.days > 100 and wire.name in ("usage", "devices") and _cuts(wire, as_of, start):
                assert own[kind] is not None and alone[kind].height < 0.5 * full[kind].height
        assert since["telemetry"] is not None and since["invoice"] is None
    # the comparison is not vacuous: the wires that read a window fire on these worlds
    assert fired["usage"] > 0 and fired["devices"] > 0 and fired["opportunity"] > 0, fired


def test_a_silent_customer_beyond_the_window_is_still_found(world) -> None:
    """A customer whose usage stopped long before the window is backfilled, not lost."""
    frames, context, start = world
    usage = frames["usage"]
    as_of = start + timedelta(days=DAYS - 1)
    # c_quiet: one month of usage at the start, then nothing for months
    quiet = usage.filter(
        pl.col("customer_id") == usage["customer_id"][0], pl.col("ts") < start + timedelta(30)
    )
    quiet = quiet.with_columns(customer_id=pl.lit("c_quiet"), event_id=pl.format("q{}", pl.col("event_id")))
    customers = pl.concat(
        [context["customers"], context["customers"].head(1).with_columns(customer_id=pl.lit("c_quiet"))]
    )
    ctx = context | {"customers": customers}
    grown = frames | {"usage": pl.concat([usage, quiet])}
    wire = load_wire("usage")
    read = frames_reader(grown)
    window, since = read_signals(read, [wire], as_of, **ctx)
    assert since["usage"] is not None
    if _cuts(wire, as_of, start):
        assert quiet["ts"].max() < since["usage"]
    full, _ = read_signals(read, [wire], as_of, full_history=True, **ctx)
    want = _detect(wire, full, as_of, ctx)
    assert want.filter(pl.col("customer_id") == "c_quiet")["condition"].to_list() == ["usage:silent:data_gb"]
    assert_frame_equal(_detect(wire, window, as_of, ctx), want, check_exact=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Context]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=tmp_path, database_url=url))
    yield ctx
    ctx.close()


def test_runner_asks_the_store_for_the_declared_window_only(world, store: Context) -> None:
    frames, context, start = world
    with transaction(store.engine) as s:
        s.add_all([Customer(id=c, name=c) for c in context["customers"]["customer_id"]])
    inner = frames_reader(frames)
    calls: list[tuple[str, datetime | None, list[str] | None]] = []

    def recording(kind: str, *, start=None, end=None, customers=None) -> pl.DataFrame | None:
        calls.append((kind, start, None if customers is None else list(customers)))
        return inner(kind, start=start, end=end, customers=customers)

    as_of = start + timedelta(days=DAYS - 1)
    wires = [load_wire(name) for name in TRIP_WIRES]
    windows = widest_history(wires)
    run_detection(store, as_of, reader=recording)
    first = {kind: s for kind, s, who in calls if who is None}
    assert first["usage"] == as_of - windows["usage"] and first["telemetry"] == as_of - windows["telemetry"]
    assert first["invoice"] is None  # invoices: all, by design (see BillingTripWire.history)
    # a second read of a kind is a whole-history read of named customers only, and not of most of them
    for kind, s, who in calls:
        if who is not None:
            assert s is None and kind == "usage" and len(who) > 0
            if _cuts(load_wire("usage"), as_of, start):
                assert len(who) < 0.5 * len(context["customers"])

    calls.clear()
    report = run_detection(store, as_of, ["usage"], reader=recording)
    assert report.wire("usage").status == "ok"
    assert calls[0] == ("usage", as_of - load_wire("usage").history()["usage"], None)
    calls.clear()
    run_detection(store, as_of, ["usage"], reader=recording, full_history=True)
    assert calls == [("usage", None, None)]


def test_a_draft_billing_a_long_period_gets_that_period_s_usage() -> None:
    """The billing usage check sums usage over a draft's period: a quarter's draft reaches before the window,
    so its customer's usage is backfilled and the mismatch is still found."""
    from forewarn.detect.billing import BillingTripWire
    from forewarn.signals.schema import KINDS

    as_of = datetime(2025, 8, 3, tzinfo=UTC)
    lines = [{"code": "overage", "description": "Data overage", "amount": 25.0, "quantity": 10.0}]
    draft = {
        "event_id": "d1",
        "customer_id": "c1",
        "ts": datetime(2025, 7, 10, tzinfo=UTC),
        "invoice_id": "c1-Q2",
        "status": "draft",
        "period_start": date(2025, 4, 1),
        "period_end": date(2025, 6, 30),
        "total": 25.0,
        "currency": "EUR",
        "lines": lines,
    }
    days = 91 + 30
    usage = pl.DataFrame(
        {
            "event_id": [f"u{i}" for i in range(days)],
            "customer_id": ["c1"] * days,
            "ts": [datetime(2025, 4, 2, tzinfo=UTC) + timedelta(days=i) for i in range(days)],
            "metric": ["data_gb"] * days,
            "value": [0.4] * days,  # 36.4 GB over the quarter, under the 50 GB allowance: no overage
        }
    )
    frames = {"invoice": pl.DataFrame([draft], schema=KINDS["invoice"].polars_schema), "usage": usage}
    context = {"customers": pl.DataFrame({"id": ["c1"], "attributes": ['{"plan_limit_gb": 50}']})}
    wire = BillingTripWire()
    read = frames_reader(frames)
    window, since = read_signals(read, [wire], as_of, **context)
    assert since["usage"] is not None and since["usage"].date() > draft["period_start"]
    full, _ = read_signals(read, [wire], as_of, full_history=True, **context)
    want = _detect(wire, full, as_of, context)
    assert want["condition"].to_list() == ["billing:usage_mismatch:c1-Q2"]
    assert_frame_equal(_detect(wire, window, as_of, context), want, check_exact=True)
