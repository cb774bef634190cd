"""The devices trip wire: counters rising from zero or accelerating, per device, point-in-time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.devices import DeviceTripWire

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def telemetry(devices: dict[str, dict[str, list[float]]], customer: str = "c1") -> pl.DataFrame:
    rows = []
    for dev, attrs in devices.items():
        for attr, values in attrs.items():
            for d, v in enumerate(values):
                rows.append(
                    (f"{dev}-{attr}-{d}", customer, T0 + timedelta(days=d), dev, attr, float(v), "ST4000")
                )
    return pl.DataFrame(
        rows,
        schema=["event_id", "customer_id", "ts", "device_id", "attribute", "value", "model"],
        orient="row",
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def at(d: int) -> datetime:
    return T0 + timedelta(days=d)


def test_rising_from_zero_fires_and_steady_history_does_not() -> None:
    tel = telemetry(
        {
            "D1": {"smart_5_raw": [0] * 20 + [8, 24], "smart_197_raw": [0] * 22},
            "D2": {"smart_5_raw": [12] * 22, "smart_187_raw": [3] * 22},  # old damage, not growing
            "D3": {"temperature_c": [30] * 21 + [70]},  # not a watched counter
        }
    )
    out = DeviceTripWire().detect({"telemetry": tel}, at(21))
    assert out.schema == FINDINGS_SCHEMA
    assert out["condition"].to_list() == ["device:D1"]
    ev = json.loads(out["evidence"][0])
    assert ev["rising"] is True and ev["model"] == "ST4000"
    c5 = next(c for c in ev["counters"] if c["attribute"] == "smart_5_raw")
    assert c5["before"] == 0 and c5["value"] == 24 and c5["delta"] == 24
    assert "reallocated sectors rose from 0 to 24 in the last 14 days" in out["explanation"][0]
    assert out["explanation"][0].startswith("Your device D1 (ST4000) is showing early signs of failure")


def test_acceleration_and_more_counters_raise_the_risk() -> None:
    slow = telemetry({"D1": {"smart_5_raw": [0] * 7 + [1] * 7 + [2] * 8}})
    fast = telemetry({"D1": {"smart_5_raw": [0] * 14 + [1, 4, 9, 16, 30, 50, 80, 120]}})
    both = telemetry(
        {"D1": {"smart_5_raw": [0] * 14 + [1, 4, 9, 16, 30, 50, 80, 120], "smart_197_raw": [0] * 20 + [4, 8]}}
    )
    risks = [DeviceTripWire().detect({"telemetry": t}, at(21))["score"][0] for t in (slow, fast, both)]
    assert risks[0] < risks[1] < risks[2] <= 1.0
    ev = json.loads(DeviceTripWire().detect({"telemetry": fast}, at(21))["evidence"][0])
    assert ev["counters"][0]["accelerating"] is True


def test_pending_sectors_present_are_a_warning_on_their_own() -> None:
    tel = telemetry({"D1": {"smart_197_raw": [16] * 30}})
    out = DeviceTripWire().detect({"telemetry": tel}, at(29))
    assert out.height == 1 and "reports 16 pending sectors" in out["explanation"][0]
    assert DeviceTripWire(level_weight=0.0).detect({"telemetry": tel}, at(29)).height == 0


def test_stale_devices_are_not_judged() -> None:
    tel = telemetry({"D1": {"smart_5_raw": [0] * 20 + [8, 24]}})
    assert DeviceTripWire().detect({"telemetry": tel}, at(21 + 8)).height == 0
    assert DeviceTripWire(max_staleness=timedelta(days=30)).detect({"telemetry": tel}, at(29)).height == 1


def test_detect_equals_history_at_latest_and_ignores_the_future() -> None:
    tel = telemetry(
        {
            "D1": {"smart_5_raw": [0] * 10 + [2, 5, 9] + [9] * 17},
            "D2": {"smart_198_raw": [0] * 25 + [1, 3, 3, 7, 7]},
            "D3": {"smart_188_raw": [1] * 30},
        }
    )
    wire = DeviceTripWire()
    hist = wire.score_history({"telemetry": tel})
    for d in range(0, 30, 3):
        live = wire.detect({"telemetry": tel}, at(d)).drop("ts").sort("condition")
        want = hist.filter(pl.col("ts") == at(d)).drop("ts").sort("condition")
        assert live.equals(want), d
        cut = (
            wire.detect({"telemetry": tel.filter(pl.col("ts") <= at(d))}, at(d)).drop("ts").sort("condition")
        )
        assert cut.equals(live), d


def test_history_skips_only_devices_that_cannot_fire() -> None:
    tel = telemetry(
        {
            "D1": {"smart_5_raw": [0] * 20 + [8, 24]},  # rising
            "D2": {"smart_5_raw": [12] * 22, "smart_187_raw": [3] * 22},  # flat: risk 0 throughout
            "D3": {"smart_197_raw": [16] * 22},  # flat but pending sectors: fires on level
            "D4": {"smart_5_raw": [0] * 22, "smart_198_raw": [0] * 22},  # flat zero
        }
    )
    wire = DeviceTripWire()
    assert wire.may_fire(tel).to_list() == ["D1", "D3"]
    nan = telemetry({"D5": {"smart_5_raw": [0] * 21 + [float("nan")]}})
    assert wire.may_fire(nan).to_list() == ["D5"]  # a non-finite reading: judged in full
    for w in (wire, DeviceTripWire(min_risk=0.1), DeviceTripWire(min_risk=0.0)):
        full = w._findings(w.risk_history(tel).filter(pl.col("fires")))
        keys = list(FINDINGS_SCHEMA)
        assert w.score_history({"telemetry": tel}).sort(keys).equals(full.sort(keys))
    assert set(DeviceTripWire(min_risk=0.0).score_history({"telemetry": tel})["condition"]) >= {
        "device:D2",
        "device:D4",
    }


@pytest.mark.datasets
def test_backblaze_devices_beat_the_plain_rule_on_false_positives() -> None:
    """Real drives: all 43 failed and a sample of working ones (full run: bench/devices_backblaze.py)."""
    import sys
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "backblaze-smart"
    if not data.exists():
        pytest.skip(f"{data} not present")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import devices_backblaze as bb

    res = bb.evaluate(bb.load(data, sample_working=3000))
    assert res["failed_last"] == 43 and res["working_last"] == 3000
    assert res["wire_recall_last"] >= 0.4  # it finds a good share of the drives that failed
    assert (
        res["wire_fpr_last"] < 0.6 * res["plain_fpr_last"]
    )  # with far fewer false alarms than the plain rule


def test_broken_readings_are_ignored_not_scored() -> None:
    nan, inf = float("nan"), float("inf")
    tel = telemetry(
        {
            "D1": {"smart_5_raw": [0] * 20 + [nan, 0]},  # a NaN reading on a healthy disk
            "D2": {"smart_197_raw": [0] * 20 + [inf, 0]},
            "D3": {"smart_5_raw": [0] * 20 + [nan, 24]},  # a real rise around a broken reading
        }
    )
    wire = DeviceTripWire()
    out = wire.detect({"telemetry": tel}, at(21))
    assert out["condition"].to_list() == ["device:D3"]
    history = wire.score_history({"telemetry": tel})
    assert set(history["condition"].to_list()) == {"device:D3"}
