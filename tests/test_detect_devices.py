"""The devices trip wire: counters rising from zero or accelerating, per device, point-in-time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.devices import FEATURES, FITTED_COEFFICIENTS, DeviceTripWire, fit_risk_model

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


FAILING = [0] * 14 + [1, 3, 8, 20, 45, 90, 150, 240]  # reallocated sectors of a disk on its way out


def test_rising_from_zero_fires_and_steady_history_does_not() -> None:
    tel = telemetry(
        {
            "D1": {"smart_5_raw": FAILING, "smart_197_raw": [0] * 22},
            "D2": {"smart_5_raw": [12] * 22, "smart_187_raw": [3] * 22},  # old damage, not growing
            "D3": {"temperature_c": [30] * 21 + [70]},  # not a watched counter
        }
    )
    out = DeviceTripWire().detect({"telemetry": tel}, at(21))
    assert out.schema == FINDINGS_SCHEMA
    assert out["condition"].to_list() == ["device:D1"]
    ev = json.loads(out["evidence"][0])
    assert ev["rising"] is True and ev["model"] == "ST4000" and ev["reason"] == "rising"
    assert ev["features"]["new_damage"] == 1.0 and ev["features"]["rise_days"] == 8
    c5 = next(c for c in ev["counters"] if c["attribute"] == "smart_5_raw")
    assert c5["before"] == 0 and c5["value"] == 240 and c5["delta"] == 240
    assert "reallocated sectors rose from 0 to 240 in the last 14 days" in out["explanation"][0]
    assert out["explanation"][0].startswith("Your device D1 (ST4000) is showing early signs of failure")


def test_acceleration_and_more_counters_raise_the_risk() -> None:
    slow = telemetry({"D1": {"smart_5_raw": [0] * 7 + [1] * 7 + [2] * 8}})
    fast = telemetry({"D1": {"smart_5_raw": [0] * 14 + [1, 4, 9, 16, 30, 50, 80, 120]}})
    both = telemetry(
        {"D1": {"smart_5_raw": [0] * 14 + [1, 4, 9, 16, 30, 50, 80, 120], "smart_197_raw": [0] * 20 + [4, 8]}}
    )
    wire = DeviceTripWire(min_risk=0.0)
    risks = [wire.detect({"telemetry": t}, at(21))["score"][0] for t in (slow, fast, both)]
    assert risks[0] < risks[1] < risks[2] <= 1.0
    ev = json.loads(wire.detect({"telemetry": fast}, at(21))["evidence"][0])
    assert ev["counters"][0]["accelerating"] is True and ev["features"]["accelerating"] == 1.0


def test_rising_pending_sectors_score_above_flat_ones_and_a_healthy_disk() -> None:
    tel = telemetry(
        {
            "rising": {"smart_197_raw": [0] * 16 + [1, 2, 4, 8, 12, 16]},
            "flat": {"smart_197_raw": [16] * 22},
            "healthy": {"smart_197_raw": [0] * 22},
        }
    )
    hist = DeviceTripWire().risk_history(tel).filter(pl.col("ts") == at(21))
    risk = dict(zip(hist["device_id"], hist["risk"], strict=True))
    assert risk["rising"] > 5 * risk["flat"] > 5 * risk["healthy"] > 0


def test_pending_sectors_present_are_explained_on_their_own() -> None:
    tel = telemetry({"D1": {"smart_197_raw": [16] * 30}})
    assert DeviceTripWire().detect({"telemetry": tel}, at(29)).height == 0  # weak evidence on its own
    out = DeviceTripWire(min_risk=0.001).detect({"telemetry": tel}, at(29))
    assert out.height == 1 and "reports 16 pending sectors" in out["explanation"][0]
    no_pending = dict(FITTED_COEFFICIENTS, pending_level=0.0, media_level=0.0, rule_any=0.0)
    assert (
        DeviceTripWire(min_risk=0.001, coefficients=no_pending).detect({"telemetry": tel}, at(29)).height == 0
    )


def test_stalled_power_on_hours_fire_with_a_plain_reason() -> None:
    hours = [1000 + 24 * d for d in range(21)]
    tel = telemetry(
        {"D1": {"smart_9_raw": [*hours, hours[-1]]}, "D2": {"smart_9_raw": [*hours, hours[-1] + 24]}}
    )
    out = DeviceTripWire().detect({"telemetry": tel}, at(21))
    assert out["condition"].to_list() == ["device:D1"]
    assert "powered on for only 0 of the last 24 hours" in out["explanation"][0]
    assert json.loads(out["evidence"][0])["reason"] == "stalled"
    # hours that go backwards (a reset) are not a stall
    reset = telemetry({"D3": {"smart_9_raw": [*hours, 5]}})
    assert DeviceTripWire().detect({"telemetry": reset}, at(21)).height == 0


def test_fitted_model_learns_the_informative_sign_and_is_point_in_time() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    feats = pl.DataFrame({f: np.zeros(n) for f in FEATURES}).with_columns(
        hours_stalled=pl.Series((rng.random(n) < 0.05).astype(float)),
        media_level=pl.Series(rng.exponential(1.0, n)),  # noise: unrelated to failing
    )
    failed = rng.random(n) < np.where(feats["hours_stalled"].to_numpy() > 0, 0.5, 0.01)
    intercept, coef = fit_risk_model(feats, failed, l2=1.0)
    assert coef["hours_stalled"] > 3 and coef["media_level"] < 0.2 and min(coef.values()) >= 0
    assert -5.5 < intercept < -3.5  # about log(0.01 / 0.99)
    wire = DeviceTripWire(intercept=intercept, coefficients=coef)
    tel = telemetry(
        {
            "D1": {"smart_5_raw": FAILING, "smart_9_raw": [24 * d for d in range(21)] + [480]},
            "D2": {"smart_197_raw": [0] * 10 + [2, 5, 9, 9, 9, 20, 20, 20, 31, 31, 31, 31]},
        }
    )
    full = wire.risk_history(tel)
    for d in (5, 12, 15, 20):
        cut = wire.risk_history(tel.filter(pl.col("ts") <= at(d)))
        assert cut.filter(pl.col("ts") <= at(d)).equals(full.filter(pl.col("ts") <= at(d))), d


def test_unknown_coefficients_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown coefficient"):
        DeviceTripWire(coefficients={"smart_5": 1.0})


def test_stale_devices_are_not_judged() -> None:
    tel = telemetry({"D1": {"smart_5_raw": FAILING}})
    assert DeviceTripWire().detect({"telemetry": tel}, at(21)).height == 1
    assert DeviceTripWire().detect({"telemetry": tel}, at(21 + 8)).height == 0
    assert DeviceTripWire(max_staleness=timedelta(days=30)).detect({"telemetry": tel}, at(29)).height == 1


def test_detect_equals_history_at_latest_and_ignores_the_future() -> None:
    tel = telemetry(
        {
            "D1": {"smart_5_raw": [0] * 10 + [2, 5, 9, 20, 45, 90] + [90] * 14},
            "D2": {"smart_198_raw": [0] * 22 + [1, 3, 3, 7, 15, 30, 60, 120]},
            "D3": {"smart_188_raw": [1] * 30},
            "D4": {"smart_9_raw": [24 * d for d in range(20)] + [456] * 10},
        }
    )
    wire = DeviceTripWire()
    hist = wire.score_history({"telemetry": tel})
    assert set(hist["condition"]) == {"device:D1", "device:D2", "device:D4"}
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
            "D1": {"smart_5_raw": FAILING},  # rising
            "D2": {"smart_5_raw": [12] * 22, "smart_187_raw": [3] * 22},  # flat, but above zero: a risk
            "D3": {"smart_197_raw": [16] * 22},  # flat pending sectors
            "D4": {"smart_5_raw": [0] * 22, "smart_198_raw": [0] * 22},  # zero throughout: the intercept
        }
    )
    wire = DeviceTripWire()
    assert wire.may_fire(tel).to_list() == ["D1", "D2", "D3"]
    nan = telemetry({"D5": {"smart_5_raw": [0] * 21 + [float("nan")]}})
    assert wire.may_fire(nan).to_list() == ["D5"]  # a non-finite reading: judged in full
    for w in (wire, DeviceTripWire(min_risk=0.002), DeviceTripWire(min_risk=0.0)):
        full = w._findings(w.risk_history(tel).filter(pl.col("fires")))
        keys = list(FINDINGS_SCHEMA)
        assert w.score_history({"telemetry": tel}).sort(keys).equals(full.sort(keys))
    assert set(DeviceTripWire(min_risk=0.0).score_history({"telemetry": tel})["condition"]) >= {
        "device:D2",
        "device:D4",
    }


@pytest.mark.datasets
def test_backblaze_held_out_drives_beat_the_plain_rule_at_its_false_positive_rate() -> None:
    """Real drives: all 43 failed and a sample of working ones, half held out (full run:
    bench/devices_backblaze.py)."""
    import sys
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "backblaze-smart"
    if not data.exists():
        pytest.skip(f"{data} not present")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import devices_backblaze as bb

    res = bb.held_out(bb.judged(bb.load(data, sample_working=3000)), seed=0)
    assert res["failed"] == 21 and res["working"] == 1500
    assert res["recall_at_rule_fpr"] > res["rule_recall"]  # more failures at no more false alarms
    fails = res["failures"]
    assert fails.filter(pl.col("wire") & ~pl.col("rule")).height >= 2  # failures the rule misses


def test_broken_readings_are_ignored_not_scored() -> None:
    nan, inf = float("nan"), float("inf")
    tel = telemetry(
        {
            "D1": {"smart_5_raw": [0] * 20 + [nan, 0]},  # a NaN reading on a healthy disk
            "D2": {"smart_197_raw": [0] * 20 + [inf, 0]},
            "D3": {"smart_5_raw": [0] * 20 + [nan, 24]},  # a real rise around a broken reading
        }
    )
    wire = DeviceTripWire(min_risk=0.01)
    out = wire.detect({"telemetry": tel}, at(21))
    assert out["condition"].to_list() == ["device:D3"]
    history = wire.score_history({"telemetry": tel})
    assert set(history["condition"].to_list()) == {"device:D3"}
