"""The detection runner: findings written set-based, one open finding per ongoing condition, idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.detect.runner import run_detection
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Customer, Finding

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(i: int) -> datetime:
    return T0 + timedelta(days=i)


def usage(n_days: int = 80) -> pl.DataFrame:
    """c1 spikes on days 70-72 (three days), c2 is steady, c3 goes silent from day 75, c9 is unknown."""
    rng = np.random.default_rng(7)
    rows = []
    for cid in ("c1", "c2", "c3", "c9"):
        for i in range(n_days):
            v = float(max(0.1, rng.normal(6, 0.4)))
            if cid in ("c1", "c9") and 70 <= i <= 72:
                v = 40.0 + i
            if cid == "c3" and i >= 75:
                v = 0.0
            rows.append((f"{cid}-{i}", cid, day(i), "data_gb", v, "GB", "day"))
    return pl.DataFrame(
        rows, schema=["event_id", "customer_id", "ts", "metric", "value", "unit", "period"], orient="row"
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def telemetry() -> pl.DataFrame:
    rows = [
        (f"t{d}", "c2", day(60 + d), "D7", "smart_5_raw", float(0 if d < 12 else 3 * (d - 11) ** 2), "WD")
        for d in range(20)
    ]
    return pl.DataFrame(
        rows,
        schema=["event_id", "customer_id", "ts", "device_id", "attribute", "value", "model"],
        orient="row",
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


@pytest.fixture
def frames() -> dict[str, pl.DataFrame]:
    return {"usage": usage(), "telemetry": telemetry()}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    """The same tests on the embedded SQLite store and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(url)
    ctx = Context(Settings(home=tmp_path, database_url=url))
    with transaction(ctx.engine) as s:
        s.add_all([Customer(id=c, name=c, plan="basic", region="eu") for c in ("c1", "c2", "c3")])
    yield ctx
    ctx.close()


def findings(ctx: Context) -> list[Finding]:
    with transaction(ctx.engine) as s:
        return list(s.scalars(select(Finding).order_by(Finding.id)))


def test_ongoing_condition_is_one_finding_updated_then_closed(store: Context, frames: dict) -> None:
    r1 = run_detection(store, day(70), ["usage", "devices"], frames=frames)
    assert r1.wire("usage").status == "ok" and r1.wire("usage").opened == 1
    assert r1.wire("usage").skipped_unknown == 1  # c9 is not a customer: not written
    (f1,) = findings(store)
    assert (f1.customer_id, f1.condition, f1.status) == ("c1", "usage:spike:data_gb", "open")
    assert f1.first_detected_at == day(70) and f1.evidence["value"] == 110.0

    r2 = run_detection(store, day(71), ["usage"], frames=frames)
    assert (r2.wire("usage").opened, r2.wire("usage").updated, r2.wire("usage").closed) == (0, 1, 0)
    (f2,) = findings(store)
    assert f2.id == f1.id and f2.first_detected_at == day(70) and f2.last_detected_at == day(71)
    assert f2.evidence["value"] == 111.0

    # later: the spike is over (closed), c3 went silent (opened), c2's disk is failing
    r3 = run_detection(store, day(78), ["usage", "devices"], frames=frames)
    assert r3.wire("usage").closed == 1 and r3.wire("devices").opened == 1
    rows = {(f.customer_id, f.condition): f for f in findings(store)}
    assert rows[("c1", "usage:spike:data_gb")].status == "closed"
    assert rows[("c1", "usage:spike:data_gb")].closed_at == day(78)
    assert rows[("c3", "usage:silent:data_gb")].status == "open"
    assert rows[("c2", "device:D7")].explanation.startswith("Your device D7 (WD)")
    assert any("seen no data use" in e for e in r3.wire("usage").examples)


def test_rerun_is_idempotent_and_never_goes_back_in_time(store: Context, frames: dict) -> None:
    run_detection(store, day(78), ["usage", "devices"], frames=frames)
    before = [(f.id, f.status, f.last_detected_at, f.score) for f in findings(store)]
    again = run_detection(store, day(78), ["usage", "devices"], frames=frames)
    assert sum(w.opened + w.closed for w in again.wires) == 0
    assert [(f.id, f.status, f.last_detected_at, f.score) for f in findings(store)] == before
    # an older as_of does not reopen, close or rewind anything
    run_detection(store, day(71), ["usage", "devices"], frames=frames)
    assert [(f.id, f.status, f.last_detected_at, f.score) for f in findings(store)] == before


def test_default_as_of_is_the_latest_signal_and_missing_wires_are_skipped(
    store: Context, frames: dict
) -> None:
    report = run_detection(store, None, frames=frames)
    assert report.as_of == day(79)
    statuses = {w.name: w.status for w in report.wires}
    assert statuses["usage"] == "ok" and statuses["devices"] == "ok"
    assert set(statuses) == {"usage", "cadence", "billing", "devices", "schedule", "opportunity"}
    assert all(s in ("ok", "skipped") for s in statuses.values()), report.to_dict()


def test_cli_rejects_unknown_wire_and_bad_time() -> None:
    from forewarn.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["detect", "--wire", "nope"])
    assert res.exit_code != 0 and "unknown" in res.output
    res = runner.invoke(app, ["detect", "--as-of", "yesterday"])
    assert res.exit_code != 0 and "ISO-8601" in res.output


def test_cli_runs_against_the_signal_store(tmp_path, monkeypatch, store: Context, frames: dict) -> None:
    store_mod = pytest.importorskip("forewarn.signals.store")
    from forewarn.cli import app
    from forewarn.config import get_settings

    sig = store_mod.SignalStore(store.settings.signals_path)
    try:
        sig.append("usage", frames["usage"].filter(pl.col("customer_id") != "c9"))
    finally:
        sig.close()
    monkeypatch.setenv("FOREWARN_HOME", str(store.settings.home))
    monkeypatch.setenv("FOREWARN_DATABASE_URL", store.settings.database_url)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["detect", "--as-of", "2026-03-19T00:00:00Z", "--wire", "usage"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert "usage" in res.output and "seen no data use" in res.output
