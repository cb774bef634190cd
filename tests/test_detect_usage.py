"""The usage trip wire: spikes, drops, level shifts, silence, seasonality, history == live."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.usage import UsageParams, UsageTripWire, detect_series, score_series

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def usage_frame(series: dict[str, list], metric: str = "data_gb", start: datetime = T0) -> pl.DataFrame:
    rows = []
    for cid, values in series.items():
        for i, v in enumerate(values):
            if v is None:  # no reading that day
                continue
            rows.append((f"{cid}-{i}", cid, start + timedelta(days=i), metric, float(v), "GB", "day"))
    return pl.DataFrame(
        rows, schema=["event_id", "customer_id", "ts", "metric", "value", "unit", "period"], orient="row"
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def noisy(n: int, level: float = 7.0, sd: float = 0.5, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.maximum(0.1, rng.normal(level, sd, n)).round(2))


def day(i: int) -> datetime:
    return T0 + timedelta(days=i)


def test_spike_fires_with_customer_readable_explanation_and_evidence() -> None:
    values = noisy(70)
    values[-1] = 41.2
    out = UsageTripWire().detect({"usage": usage_frame({"c1": values})}, day(69))
    assert out.schema == FINDINGS_SCHEMA
    assert out["condition"].to_list() == ["usage:spike:data_gb"]
    ev = json.loads(out["evidence"][0])
    assert ev["value"] == 41.2 and 6.5 < ev["expected"] < 7.5 and ev["z"] > 10
    text = out["explanation"][0]
    # rows are stamped at the end of the day they cover: the row at 2026-03-11T00:00 is 10 March
    assert text.startswith("Your data use on 2026-03-10 was 41.2 GB, about ")
    assert "x your usual 7" in text and text.endswith("GB a day.")
    assert out["ts"][0] == day(69)


def test_ordinary_noise_stays_quiet() -> None:
    frame = usage_frame({f"c{i}": noisy(100, level=5 + i, sd=0.3 * (1 + i % 3), seed=i) for i in range(50)})
    hist = UsageTripWire().score_history({"usage": frame})
    # 50 customers x ~58 scored days of pure noise: at most a handful of alarms
    assert hist.height <= 5


def test_drop_fires_but_not_a_modest_dip() -> None:
    values = noisy(70, level=10.0)
    values[-1] = 1.0
    out = UsageTripWire().detect({"usage": usage_frame({"c1": values})}, day(69))
    assert out["condition"].to_list() == ["usage:drop:data_gb"]
    assert "well below your usual" in out["explanation"][0]
    values[-1] = 8.0  # 2 sd below, 80% of usual: normal life
    assert UsageTripWire().detect({"usage": usage_frame({"c1": values})}, day(69)).height == 0


def test_sustained_level_shift_is_one_condition() -> None:
    values = noisy(60, level=10.0) + noisy(8, level=25.0, seed=3)
    wire = UsageTripWire()
    out = wire.detect({"usage": usage_frame({"c1": values})}, day(67))
    assert out["condition"].to_list() == ["usage:level_shift:data_gb"]
    ev = json.loads(out["evidence"][0])
    assert ev["direction"] == "up" and ev["recent_median"] > 20
    assert "for the last 7 days, up from your usual" in out["explanation"][0]


@pytest.mark.parametrize("gap", ["zeros", "missing"])
def test_went_silent_after_n_periods(gap: str) -> None:
    quiet = [0.0] * 4 if gap == "zeros" else [None] * 4
    values = noisy(60, level=3.0) + quiet
    other = noisy(64, level=3.0, seed=9)  # someone still reporting: the data's "now" is day 63
    frame = usage_frame({"c1": values, "c2": other})
    wire = UsageTripWire()
    early = wire.detect({"usage": frame}, day(61))
    assert early.filter(pl.col("condition").str.contains("silent")).height == 0
    out = wire.detect({"usage": frame}, day(63))
    silent = out.filter(pl.col("customer_id") == "c1")
    assert silent["condition"].to_list() == ["usage:silent:data_gb"]
    assert silent["explanation"][0].startswith("We have seen no data use from you for 4 days")


def test_no_opinion_before_minimum_history() -> None:
    values = noisy(30)
    values[-1] = 500.0
    assert UsageTripWire().detect({"usage": usage_frame({"c1": values})}, day(29)).height == 0


def test_weekly_seasonality_judges_each_weekday_against_its_own() -> None:
    # a weekend user: Saturdays and Sundays are 5x the weekdays; a normal weekend is not a spike
    values = [(25.0 if day(i).weekday() >= 5 else 5.0) + 0.2 * (i % 3) for i in range(70)]
    last_saturday = max(i for i in range(70) if day(i).weekday() == 5)
    frame = usage_frame({"c1": values[: last_saturday + 1]})
    assert UsageTripWire().detect({"usage": frame}, day(last_saturday)).height == 0
    # a Monday at weekend level is a spike for the weekly model; the flat model (blurred) misses it
    monday = values[: last_saturday + 3]
    monday[-1] = 25.0
    frame = usage_frame({"c1": monday})
    out = UsageTripWire().detect({"usage": frame}, day(last_saturday + 2))
    assert out["condition"].to_list() == ["usage:spike:data_gb"]
    assert json.loads(out["evidence"][0])["seasonal"] is True
    assert UsageTripWire(season=None).detect({"usage": frame}, day(last_saturday + 2)).height == 0


def test_detect_equals_history_at_latest() -> None:
    rng = np.random.default_rng(4)
    series = {}
    for i in range(40):
        v = noisy(90, level=float(rng.uniform(1, 20)), sd=float(rng.uniform(0.1, 2)), seed=i)
        kind = i % 4
        if kind == 0:
            v[rng.integers(50, 90)] *= 8
        elif kind == 1:
            v[70:] = [x * 0.2 for x in v[70:]]
        elif kind == 2:
            v[80:] = [0.0] * 10
        elif i % 8 == 3:  # missing readings, before and inside the recent tail
            v[30] = v[47] = v[86] = None
        if i == 39:  # a customer who joined late
            v[:60] = [None] * 60
        series[f"c{i}"] = v
    frame = usage_frame(series)
    wire = UsageTripWire()
    hist = wire.score_history({"usage": frame})
    assert hist.height > 20
    for as_of_day in (55, 72, 83, 86, 89):
        as_of = day(as_of_day)
        live = wire.detect({"usage": frame}, as_of).drop("ts").sort("customer_id", "condition")
        want = hist.filter(pl.col("ts") == as_of).drop("ts").sort("customer_id", "condition")
        assert live.equals(want), as_of_day


def test_service_series_for_outage_detection() -> None:
    t = [T0 + timedelta(minutes=5 * i) for i in range(300)]
    rng = np.random.default_rng(1)
    rows = []
    for region in ("eu", "us"):
        for i, ts in enumerate(t):
            err = 0.01 + rng.normal(0, 0.002)
            if region == "eu" and i >= 297:
                err = 0.2
            rows.append(("api", region, "error_rate", ts, err))
    frame = pl.DataFrame(rows, schema=["service_id", "region", "metric", "ts", "value"], orient="row")
    params = UsageParams(every="5m", season=None, fill_gaps=False)
    out = detect_series(frame, ["service_id", "region", "metric"], "value", t[-1], params)
    assert out.select("region", "signal", "direction").rows() == [("eu", "spike", "up")]
    scored = score_series(frame, ["service_id", "region", "metric"], "value", params)
    assert scored.height == 600 and {"expected", "scale", "z", "shift_z", "zero_run"} <= set(scored.columns)


def test_duplicate_readings_are_summed_and_unknown_params_rejected() -> None:
    values = noisy(70)
    frame = usage_frame({"c1": values})
    doubled = pl.concat([frame, frame.with_columns(pl.col("event_id") + "b")])
    a = score_series(frame, ["customer_id", "metric"], "value")
    b = score_series(doubled, ["customer_id", "metric"], "value")
    assert b.height == a.height and b["value"].to_list() == [2 * x for x in a["value"].to_list()]
    with pytest.raises(ValueError, match="unknown parameter"):
        UsageTripWire(windw=3)


def test_row_order_does_not_matter() -> None:
    series = {f"c{i}": noisy(70, level=3 + i, seed=i) for i in range(5)}
    series["c2"][-1] = 60.0
    frame = usage_frame(series)
    wire = UsageTripWire()
    want = wire.detect({"usage": frame}, day(69))
    got = wire.detect({"usage": frame.sample(fraction=1.0, shuffle=True, seed=3)}, day(69))
    assert want.height == 1 and got.equals(want)


def test_nab_scorer_rewards_early_detection_and_normalises() -> None:
    """The NAB scorer of bench/nab.py on a hand-made series: perfect = 100, null = 0, late < early."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import nab

    ts = [T0 + timedelta(minutes=5 * i) for i in range(2000)]
    parts = nab.file_parts("x.csv", ts, [(ts[1000], ts[1099])])
    assert nab.probation_length(2000) == 300 and parts.n_windows == 1
    prof = {"tp": 1.0, "fp": 0.11, "fn": 1.0}

    def score_with(rows: list[int]) -> float:
        s = np.zeros(2000)
        s[rows] = 1.0
        return nab.file_score(parts, s, 0.5, prof)

    assert score_with([]) == -1.0
    assert score_with([1000]) == pytest.approx(1.0)  # the left edge earns the full A_TP
    assert 0 < score_with([1090]) < score_with([1050]) < 1.0  # later in the window earns less
    assert score_with([1000, 500]) == pytest.approx(1.0 - 0.11)  # an FP before any window costs A_FP
    assert score_with([1000, 100]) == pytest.approx(1.0)  # the probationary period is not scored
    thr, total = nab.corpus_sweep([parts], [np.where(np.arange(2000) == 1000, 0.9, 0.1)], prof)
    assert thr == 0.9 and total == pytest.approx(1.0)


def _grid_fill(frame: pl.DataFrame, keys: list[str], every: str, end: datetime | None) -> pl.DataFrame:
    """Gap filling by the general route: each series' full grid of periods joined with its rows."""
    end_ts = frame["ts"].max() if end is None else end
    spans = frame.group_by(keys).agg(first=pl.col("ts").min())
    grid = spans.select(
        *keys, ts=pl.datetime_ranges(pl.col("first"), pl.lit(end_ts), interval=every)
    ).explode("ts")
    return grid.join(frame, on=[*keys, "ts"], how="left").with_columns(pl.col("value").fill_null(0.0))


@pytest.mark.parametrize("every", ["1d", "1h"])
def test_fixed_step_gap_filling_equals_the_grid_join(every: str) -> None:
    from forewarn.detect.usage import _fill_gaps

    rng = np.random.default_rng(7)
    keys = ["customer_id", "metric"]
    for trial in range(60):
        rows = []
        for c in range(int(rng.integers(1, 5))):
            for d in sorted(set(rng.integers(0, 40, size=int(rng.integers(1, 20))).tolist())):
                off = (
                    timedelta(hours=int(rng.integers(1, 3))) if rng.random() < 0.1 else timedelta(0)
                )  # off-grid
                v = None if rng.random() < 0.1 else float(rng.random())
                rows.append((f"c{c}", "data_gb", day(d) + off, v))
        unit = "ms" if trial % 2 else "us"
        schema = {
            "customer_id": pl.String,
            "metric": pl.String,
            "ts": pl.Datetime(unit, "UTC"),
            "value": pl.Float64,
        }
        frame = pl.DataFrame(rows, schema=schema, orient="row").unique([*keys, "ts"]).sort([*keys, "ts"])
        end = None if trial % 3 else day(int(rng.integers(10, 50)))
        got = _fill_gaps(frame, keys, "value", every, end)
        assert got.equals(got.sort([*keys, "ts"]))  # still in series order
        assert got.equals(_grid_fill(frame, keys, every, end).sort([*keys, "ts"])), trial


def _weekend_users(n: int, days: int, seed: int) -> dict[str, list[float]]:
    """Multiplicative (lognormal, sigma 0.22) daily noise around a level, weekends 1.3-1.45x: ordinary life."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        level, boost = rng.uniform(2, 12), rng.uniform(1.3, 1.45)
        # rows are stamped at the end of the day they cover: the row at day(i) is about day(i - 1)
        week = np.array([boost if day(d - 1).weekday() >= 5 else 1.0 for d in range(days)])
        out[f"w{i}"] = list((level * week * np.exp(0.22 * rng.standard_normal(days))).round(3))
    return out


def test_usual_weekends_and_lognormal_noise_are_not_spikes() -> None:
    series = _weekend_users(150, 120, seed=2)
    spiked = series["w0"].copy()
    spiked[100] *= 3.5  # a Friday's use at 3.5x: worth telling
    series["w0"] = spiked
    frame = usage_frame(series)
    hist = UsageTripWire().score_history({"usage": frame})
    spikes = hist.filter(pl.col("condition") == "usage:spike:data_gb")
    assert day(100) in spikes.filter(pl.col("customer_id") == "w0")["ts"].to_list()
    # 150 customers x ~75 judged days: the flat baseline (the weekly pattern is weak against the noise) and
    # additive z alone let ordinary weekends and the lognormal right tail through as "spikes"
    # (compared at a 2x floor, where the additive test alone lets most through)
    plain = UsageTripWire(relative_z=False, same_season_check=False, min_ratio=2.0).score_history(
        {"usage": frame}
    )
    n_plain = plain.filter(pl.col("condition") == "usage:spike:data_gb").height
    judged = UsageTripWire(min_ratio=2.0).score_history({"usage": frame})
    n_judged = judged.filter(pl.col("condition") == "usage:spike:data_gb").height
    assert spikes.height <= n_judged <= 6 and n_plain > 4 * n_judged
    # the core scorer (shared with outage and NAB scoring) is unchanged: no same-season columns by default
    assert "season_median" not in score_series(frame, ["customer_id", "metric"], "value").columns


def _population_with_a_drop(days: int, drop_from: int, seed: int = 5) -> pl.DataFrame:
    """40 customers of daily data use (lognormal noise); ``c0`` falls to 5% of its usual from ``drop_from``
    on (and recovers at day ``drop_from + 60``), ``c1`` rises 6x for the 5 days before ``drop_from + 10``."""
    rng = np.random.default_rng(seed)
    series = {}
    for i in range(40):
        v = rng.uniform(2, 12) * np.exp(0.25 * rng.standard_normal(days))
        if i == 0:
            v[drop_from : drop_from + 60] *= 0.05
        if i == 1:
            v[drop_from + 5 : drop_from + 10] *= 6
        series[f"c{i}"] = list(v.round(3))
    return usage_frame(series)


def test_a_sustained_drop_stays_one_ongoing_finding_until_usage_recovers() -> None:
    """A drop to 5% of usual is found on its first day and still on day 8, 30 and 60, as the same condition
    every day (one open finding in the store), judged against the usual level before it (the baseline does
    not absorb the drop); once usage is back the finding goes."""
    drop_from = 90
    frame = _population_with_a_drop(drop_from + 75, drop_from)
    wire = UsageTripWire()
    hist = wire.score_history({"usage": frame}).filter(pl.col("customer_id") == "c0")
    held = hist.filter(pl.col("ts").is_between(day(drop_from), day(drop_from + 59)))
    # every day of the drop, one finding, always the same condition: the store keeps one open finding
    assert held["ts"].to_list() == [day(drop_from + k) for k in range(60)]
    assert held["condition"].unique().to_list() == ["usage:drop:data_gb"]
    for k in (7, 29, 59):  # day 8, 30 and 60 of the drop
        live = wire.detect({"usage": frame}, day(drop_from + k)).filter(pl.col("customer_id") == "c0")
        assert live["condition"].to_list() == ["usage:drop:data_gb"], k
        ev = json.loads(live["evidence"][0])
        assert ev["ratio"] < 0.15 and ev["expected"] > 1.0  # against the level before the drop
        assert "well below your usual" in live["explanation"][0]
    # recovered: a few days after usage is back, no finding (and none about the return to normal either)
    after = hist.filter(pl.col("ts") >= day(drop_from + 63))
    assert after.height == 0, after.select("ts", "condition").rows()
    # the customer whose use rose 6x is found too, and nobody else is told about a drop
    end = wire.detect({"usage": frame}, day(drop_from + 9))
    assert "c1" in end["customer_id"].to_list()
    assert end.filter(pl.col("condition") == "usage:drop:data_gb")["customer_id"].to_list() == ["c0"]


def test_a_windowed_read_finds_an_old_held_drop_like_a_full_read() -> None:
    """The live path reads only the declared window (a held drop's reach included) and scores the tail, yet
    finds what scoring everything finds: a drop 80 days old is still one finding, from a real cut."""
    from forewarn.detect.runner import frames_reader, read_signals

    frame = _population_with_a_drop(330, 200, seed=8)  # c0 at 5% from day 200 to 259, 330 days in all
    customers = pl.DataFrame({"customer_id": [f"c{i}" for i in range(40)]})
    wire = UsageTripWire()
    read = frames_reader({"usage": frame})
    for d in (207, 229, 279, 329):
        as_of = day(d)
        full, _ = read_signals(read, [wire], as_of, full_history=True, customers=customers)
        window, since = read_signals(read, [wire], as_of, customers=customers)
        want = wire.detect(full, as_of, customers=customers).sort("customer_id", "condition")
        got = wire.detect(window, as_of, customers=customers).sort("customer_id", "condition")
        assert got.equals(want), d
        held = want.filter(pl.col("customer_id") == "c0")["condition"].to_list()
        assert held == (["usage:drop:data_gb"] if d < 260 else []), d
        if d > 250:
            assert since["usage"] is not None and window["usage"].height < 0.6 * full["usage"].height


def test_no_level_shift_while_the_spread_is_still_unknown() -> None:
    # a monthly swing of +-25% seen in the first weeks: the 7-day median moves ~60% against the first 21
    # days before the baseline knows how much this customer's usage varies; judged against the bare 5%
    # spread floor that was a "level shift" for most customers of a noisy world
    rng = np.random.default_rng(1)
    days = np.arange(120)
    values = 7.0 * (1 + 0.25 * np.sin(2 * np.pi * days / 30.44 + 1.0)) * np.exp(rng.normal(0, 0.3, 120))
    p = UsageParams()
    known = p.window + p.scale_window + p.shift_window - 1  # first row whose level shift has a spread
    scored = score_series(usage_frame({"c1": list(values.round(2))}), ["customer_id", "metric"], "value", p)
    early = scored.filter(pl.col("history") < known)
    assert (
        early.filter(pl.col("history") >= p.window + p.shift_window - 1)["recent_median"].is_not_null().all()
    )
    assert (early["signal"] == "level_shift").sum() == 0
    assert early["shift_z"].is_null().all()
    # once the spread is known, a real lasting move is still a level shift
    moved = np.concatenate([values[:80], values[80:] * 2.5])
    late = score_series(usage_frame({"c1": list(moved.round(2))}), ["customer_id", "metric"], "value", p)
    assert (late.filter(pl.col("history") >= 80)["signal"] == "level_shift").any()
