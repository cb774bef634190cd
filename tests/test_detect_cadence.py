"""Cadence trip wire: interval rule, BG/NBD lapses, contact rhythm, point-in-time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from forewarn.detect import registry
from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.cadence import CadenceTripWire

T0 = datetime(2025, 1, 6, 10, tzinfo=UTC)


def events(customer: str, days: list[float], event_type: str = "visit") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"{customer}-{i}" for i in range(len(days))],
            "customer_id": [customer] * len(days),
            "ts": [T0 + timedelta(days=d) for d in days],
            "event_type": [event_type] * len(days),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def contacts(customer: str, days: list[float]) -> pl.DataFrame:
    return events(customer, days).drop("event_type").with_columns(pl.lit("phone").alias("channel"))


def test_interval_rule_fires_when_overdue_by_k_median_gaps() -> None:
    wire = CadenceTripWire()
    frame = events("c1", [0, 91, 182, 273])  # every 3 months
    quiet_4_months = wire.detect({"purchase": frame}, T0 + timedelta(days=273 + 122))
    assert quiet_4_months.height == 0  # 1.34x the usual gap: within the default 2x
    assert wire.detect({"purchase": frame}, T0 + timedelta(days=273 + 182)).height == 0  # exactly 2x
    late = wire.detect({"purchase": frame}, T0 + timedelta(days=273 + 200))
    assert late.schema == FINDINGS_SCHEMA
    row = late.row(0, named=True)
    assert (row["customer_id"], row["condition"], row["severity"], row["topic"]) == (
        "c1",
        "cadence:lapse:visit",
        "info",
        "account",
    )
    assert (
        row["explanation"]
        == "It has been 7 months since your last visit; you usually visit about every 3 months."
    )
    evidence = json.loads(row["evidence"])
    assert (
        evidence["rule"] == "interval"
        and evidence["median_gap_days"] == 91
        and evidence["days_since_last"] == 200
        and evidence["p_gap_this_long"] < 0.005
    )
    # The example: "came every 3 months, not in 4" with k = 1.3.
    assert (
        CadenceTripWire(overdue_factor=1.3, rhythm_alpha=1.0)
        .detect({"purchase": frame}, T0 + timedelta(days=273 + 122))
        .height
        == 1
    )


def test_interval_rule_needs_enough_events_and_uses_each_type_separately() -> None:
    wire = CadenceTripWire()
    two = events("c1", [0, 30])
    assert wire.detect({"purchase": two}, T0 + timedelta(days=400)).height == 0
    mixed = pl.concat([events("c2", [0, 7, 14, 21], "purchase"), events("c2", [0, 100, 200], "visit")])
    out = wire.detect({"purchase": mixed}, T0 + timedelta(days=220))
    assert out["condition"].to_list() == ["cadence:lapse:purchase"]
    assert "shop with us about every 7 days" in out["explanation"][0]


def test_point_in_time_rows_after_as_of_are_ignored() -> None:
    wire = CadenceTripWire()
    frame = events("c1", [0, 30, 60, 90])
    as_of = T0 + timedelta(days=160)
    before = wire.detect({"purchase": frame}, as_of)
    later = pl.concat([frame, events("c1", [160.2, 161, 200]).with_columns(pl.lit("x").alias("event_id"))])
    after = wire.detect({"purchase": later}, as_of)  # 160.2 is later the same day, still the future
    assert before.height == 1
    assert before.equals(after)


def _population(n: int, seed: int) -> pl.DataFrame:
    """Customers buying at gamma-distributed weekly rates over 60 weeks, some stopping at random."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        lam = rng.gamma(0.9, 1 / 1.5)
        stop = rng.uniform(5, 80)
        t, days = 0.0, [0.0]
        while True:
            t += rng.exponential(7 / max(lam, 1e-3))
            if t > min(stop * 7, 420):
                break
            days.append(t)
        frames.append(events(f"p{i:04d}", days, "purchase"))
    return pl.concat(frames)


def test_bgnbd_lapse_for_frequent_buyer_and_not_for_active_one() -> None:
    as_of = T0 + timedelta(days=420)
    population = _population(400, seed=11)
    lapsed = events("heavy-gone", [7.0 * w for w in range(30)], "purchase")  # weekly, stopped ~31 weeks ago
    active = events("heavy-here", [14.0 * w for w in range(30)], "purchase")  # fortnightly, last 14 days ago
    frames = {"purchase": pl.concat([population, lapsed, active])}
    wire = CadenceTripWire()
    out = wire.detect(frames, as_of)
    by_customer = {r["customer_id"]: r for r in out.iter_rows(named=True)}
    assert "heavy-gone" in by_customer and "heavy-here" not in by_customer
    evidence = json.loads(by_customer["heavy-gone"]["evidence"])
    assert evidence["rule"] == "bgnbd" and evidence["p_alive"] < 0.3
    assert set(evidence["bgnbd"]) >= {"r", "alpha", "a", "b"}
    assert by_customer["heavy-gone"]["confidence"] == pytest.approx(1 - evidence["p_alive"], abs=1e-4)

    # Broadcast population parameters give the same answer without fitting on this bucket.
    model = wire.model_for(frames["purchase"].filter(pl.col("ts") <= as_of), as_of)
    assert model is not None
    only_two = {"purchase": pl.concat([lapsed, active])}
    broadcast = wire.detect(only_two, as_of, bgnbd=model)
    assert broadcast["customer_id"].to_list() == ["heavy-gone"]
    assert json.loads(broadcast["evidence"][0])["p_alive"] == pytest.approx(evidence["p_alive"])
    assert wire.detect(only_two, as_of, bgnbd={"purchase": model}).height == 1


def test_bgnbd_model_is_fitted_point_in_time() -> None:
    as_of = T0 + timedelta(days=300)
    population = _population(300, seed=5)
    wire = CadenceTripWire()
    after = population.with_columns(pl.col("ts") + timedelta(days=120)).filter(pl.col("ts") > as_of)
    assert after.height > 0
    base = wire.model_for(population, as_of)
    assert base is not None and wire.model_for(pl.concat([population, after]), as_of) == base
    # Rows after as_of are dropped inside detect before the fit: same findings either way.
    assert wire.detect({"purchase": population}, as_of).equals(
        wire.detect({"purchase": pl.concat([population, after])}, as_of)
    )


def test_contact_rhythm_gone_quiet() -> None:
    wire = CadenceTripWire()
    frame = contacts("c1", [7.0 * w for w in range(10)])  # weekly contacts, last on day 63
    assert wire.detect({"contact": frame}, T0 + timedelta(days=63 + 10)).height == 0
    out = wire.detect({"contact": frame}, T0 + timedelta(days=63 + 30))
    row = out.row(0, named=True)
    assert row["condition"] == "cadence:quiet:contact"
    assert (
        row["explanation"]
        == "We have not heard from you in 4 weeks; you usually get in touch about every 7 days."
    )
    # Occasional contacters (3 contact days) have no rhythm to break.
    assert wire.detect({"contact": contacts("c2", [0, 50, 100])}, T0 + timedelta(days=400)).height == 0


def test_contract_registry_and_bad_parameters() -> None:
    wire = registry.load("cadence", overdue_factor=2.0)
    assert wire.name == "cadence" and set(wire.kinds) == {"purchase", "contact"}
    assert wire.params.overdue_factor == 2.0
    with pytest.raises(ValueError, match="unknown parameter"):
        CadenceTripWire(overdue=2)
    empty = wire.detect({}, T0)
    assert empty.schema == FINDINGS_SCHEMA and empty.height == 0


# -- score_history: every daily run in one pass ---------------------------------------------------------


def _detect_every_run(wire: CadenceTripWire, frames: dict, runs: list[datetime]) -> pl.DataFrame:
    """``detect`` at every run, with the population models ``score_history`` uses at that run."""
    schedule = {
        et: wire.history_models(frames["purchase"].filter(pl.col("event_type") == et), runs)
        for et in wire.params.event_types
    }
    parts = []
    for run in runs:
        models = {et: [m for at, m in s if at <= run][-1] for et, s in schedule.items()}
        parts.append(wire.detect(frames, run, bgnbd=models))
    return pl.concat(parts)


def test_score_history_equals_detect_at_every_run_on_a_simulated_world() -> None:
    from forewarn.sim.world import SimConfig, simulate

    world = simulate(SimConfig(customers=300, days=90, seed=3))
    frames = {k: world.frames[k] for k in ("purchase", "contact")}
    # ~30 customers buy in this small world: let the population model fit on them (refit every 3 weeks);
    # an eager lapse prior so that the rhythm's P(alive) fires often enough to compare many runs.
    wire = CadenceTripWire(min_fit_customers=20, refit_days=21, lapse_prior=0.1)
    runs = [datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(days=d) for d in range(91)]
    history = wire.score_history(frames, runs=runs)
    assert history.schema == FINDINGS_SCHEMA
    assert history.height > 50 and history["ts"].n_unique() > 20
    models = [
        m
        for et in ("purchase", "visit")
        for _, m in wire.history_models(frames["purchase"].filter(pl.col("event_type") == et), runs)
    ]
    assert sum(m is not None for m in models) >= 4  # the BG/NBD path is exercised
    assert any("p_alive_rhythm" in json.loads(e) for e in history["evidence"])  # and the rhythm's P(alive)
    assert_frame_equal(history, _detect_every_run(wire, frames, runs))
    # Without ``runs``: one run a day at 09:00 UTC from the first to the last event day.
    assert_frame_equal(wire.score_history(frames), history.filter(pl.col("ts") < runs[-1]))


def test_score_history_contact_lookback_bgnbd_and_same_day_events() -> None:
    population = _population(250, seed=7)
    lapsed = events("heavy-gone", [7.0 * w for w in range(30)], "purchase")
    # Contacts: an old weekly rhythm, a year of silence, then a new one with an event later the same day.
    talk = contacts("c1", [7.0 * w for w in range(8)] + [500 + 3.0 * w for w in range(6)] + [515.4])
    frames = {"purchase": pl.concat([population, lapsed]), "contact": talk}
    wire = CadenceTripWire(refit_days=60)
    runs = [T0.replace(hour=9) + timedelta(days=d) for d in range(0, 560, 6)]
    history = wire.score_history(frames, runs=runs)
    assert set(history["condition"]) >= {"cadence:lapse:purchase", "cadence:quiet:contact"}
    rules = {json.loads(e)["rule"] for e in history["evidence"]}
    assert "bgnbd" in rules
    assert_frame_equal(history, _detect_every_run(wire, frames, runs))


def test_score_history_is_point_in_time() -> None:
    population = _population(250, seed=3)
    wire = CadenceTripWire(refit_days=30)
    runs = [T0.replace(hour=9) + timedelta(days=d) for d in range(0, 400, 2)]
    cut = runs[120]
    full = wire.score_history({"purchase": population}, runs=runs)
    known = wire.score_history({"purchase": population.filter(pl.col("ts") <= cut)}, runs=runs)
    assert full.filter(pl.col("ts") <= cut).height > 0
    # Data added after a run never changes that run's findings (models included).
    assert_frame_equal(full.filter(pl.col("ts") <= cut), known.filter(pl.col("ts") <= cut))


def _regular_buyers(n: int, seed: int, days: float = 240.0) -> pl.DataFrame:
    """Customers with a steady habit: gamma(4) gaps (CV 0.5) around a personal mean of 6-24 days."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        mean = float(np.exp(rng.uniform(np.log(6), np.log(24))))
        t = float(rng.uniform(0, mean))
        out = []
        while t < days:
            out.append(t)
            t += float(rng.gamma(4.0, mean / 4.0))
        frames.append(events(f"r{i:04d}", out, "purchase"))
    return pl.concat(frames)


def test_ordinary_long_gaps_of_regular_buyers_are_not_lapses() -> None:
    # 300 steady buyers who never stop, and one who stopped on day 100 after buying every ~10 days. A gap of
    # 2x the mean happens to a gamma(4) buyer about once in 25 gaps: judged by a shape read from a dozen of
    # their own gaps (which often look twice as regular), they made false lapses of ~1 in 5 customers.
    alive = _regular_buyers(300, seed=4)
    gone = events("gone", [10.0 * k for k in range(11)], "purchase")
    frames = {"purchase": pl.concat([alive, gone])}
    wire = CadenceTripWire()
    model = wire.model_for(frames["purchase"], T0 + timedelta(days=120))
    assert model is not None and 3.0 < model.gap_shape < 5.5  # the pooled shape finds the habit's gamma(4)
    runs = [T0.replace(hour=9) + timedelta(days=d) for d in range(60, 240, 3)]
    history = wire.score_history(frames, runs=runs)
    false = history.filter(pl.col("customer_id") != "gone")["customer_id"].n_unique()
    assert false <= 6  # 2% of customers over 6 months (the lapse prior and P(alive) < 0.3 allow ~1 in 100)
    found = history.filter(pl.col("customer_id") == "gone")
    assert found.height > 0 and found["ts"].min() < T0 + timedelta(days=100 + 45)
    evidence = json.loads(found["evidence"][0])
    assert evidence["rule"] == "rhythm" and evidence["p_alive_rhythm"] < 0.3
    # Without any population prior (no model, no pooled shape: the interval rule on the customer's own gaps)
    # it is noisier.
    own = CadenceTripWire(min_fit_customers=10_000, shape_min_customers=10_000).score_history(
        frames, runs=runs
    )
    assert own.filter(pl.col("customer_id") != "gone")["customer_id"].n_unique() > 2 * false


def test_too_few_customers_for_bgnbd_still_use_the_pooled_gap_shape() -> None:
    # 150 visitors are too few for a BG/NBD fit (min_fit_customers 200) but plenty for the pooled regularity
    # of their gaps: the rhythm rule weighs each silence against it (as with a fitted model), not the noisy
    # interval rule on a customer's own handful of gaps, which made most visit lapses false alarms.
    alive = _regular_buyers(150, seed=5)
    gone = events("gone", [10.0 * k for k in range(11)], "purchase")
    frames = {"purchase": pl.concat([alive, gone])}
    wire = CadenceTripWire()
    model = wire.model_for(frames["purchase"], T0 + timedelta(days=120))
    assert model is not None and not model.fitted and 3.0 < model.gap_shape < 5.5
    runs = [T0.replace(hour=9) + timedelta(days=d) for d in range(60, 240, 3)]
    history = wire.score_history(frames, runs=runs)
    false = history.filter(pl.col("customer_id") != "gone")["customer_id"].n_unique()
    found = history.filter(pl.col("customer_id") == "gone")
    assert found.height > 0 and json.loads(found["evidence"][0])["rule"] == "rhythm"
    own = CadenceTripWire(shape_min_customers=10_000).score_history(frames, runs=runs)
    assert own.filter(pl.col("customer_id") != "gone")["customer_id"].n_unique() > 2 * max(false, 1)
    # detect at one run agrees with score_history there
    at = runs[-1]
    assert set(wire.detect(frames, at)["customer_id"]) == set(
        history.filter(pl.col("ts") == at)["customer_id"]
    )
