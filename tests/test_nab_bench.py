"""The NAB bench's detector (bench/nab.py): point-in-time honesty, the spread floor, and the --cv machinery."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import nab  # noqa: E402

T0 = datetime(2026, 1, 5)


def _series(n: int, step_min: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A daily and weekly cycle with noise, flat zero runs and a few spikes and a level shift."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    per_day = 24 * 60 // step_min
    v = 10 + 3 * np.sin(2 * np.pi * t / per_day) + 2 * ((t // per_day) % 7 >= 5) + rng.normal(0, 0.5, n)
    v[n // 5 : n // 5 + 40] = 0.0  # a flat run: the spread collapses there
    v[rng.choice(np.arange(n // 3, n), 5, replace=False)] += 15.0
    v[int(0.8 * n) :] += 6.0
    ts = np.datetime64(T0, "us") + t * np.timedelta64(step_min, "m")
    return ts, v


@pytest.mark.parametrize(("n", "step_min", "seed"), [(3000, 60, 1), (1500, 5, 2)])
def test_scores_up_to_t_do_not_depend_on_later_rows(n: int, step_min: int, seed: int) -> None:
    ts, v = _series(n, step_min, seed)
    prob = nab.probation_length(n)  # the full series' probation period: NAB fixes it from the whole file
    full = nab.anomaly_scores(ts, v, prob)
    assert full.shape == (n,) and np.all((full >= 0) & (full <= 1)) and full[:prob].max() == 0.0
    assert full.max() > 0.9  # the spikes and the shift are found, so the comparison below is not vacuous
    for cut in (prob + 1, n // 2, int(0.8 * n) + 3, n - 1):
        part = nab.anomaly_scores(ts[:cut], v[:cut], prob)
        np.testing.assert_allclose(part, full[:cut], rtol=0, atol=1e-12)


def test_weekly_model_only_when_two_weeks_fit_in_probation() -> None:
    ts, v = _series(3000, 60, 3)
    n_models = nab._model_errors(v, 400, nab.rows_per_day(ts))[0].shape[0]
    assert n_models == 5  # level, previous value, local mean, a day earlier, a week earlier (336 < 400)
    assert nab._model_errors(v, 300, 24)[0].shape[0] == 4  # two weeks (336 rows) do not fit in 300


def test_spread_floor_bounds_the_score_after_a_flat_run() -> None:
    """A small step after a constant run: without the floor its z is astronomical and it scores ~1 (and
    every later row is judged against that record); with it, a step of 0.2% of the range stays low."""
    rng = np.random.default_rng(4)
    n, prob = 2000, 300
    v = rng.normal(50, 10, n)
    v[1000:1300] = 50.0
    v[1300] = 50.2
    errors, spreads = nab._model_errors(v, prob, 288)
    no_floor = nab.scores_from_errors(v, errors, spreads, prob, {"scale_floor": 0.0})
    floored = nab.scores_from_errors(v, errors, spreads, prob)
    assert no_floor[1300] > 0.99
    assert floored[1300] < 0.2


def test_split_halves_are_stable_and_both_used() -> None:
    names = [f"cat/file_{i}.csv" for i in range(40)]
    halves = [nab.split_half(n) for n in names]
    assert halves == [nab.split_half(n) for n in names] and set(halves) == {0, 1}


def test_cross_validation_holds_out_whole_categories_and_chooses_on_the_rest() -> None:
    """Three categories of synthetic files, each with a labelled spike: one fold per category (and the two
    hash halves), each fold's threshold is the best one on the *other* files for the parameters chosen there,
    and the pooled held-out score is a normalised NAB score (perfect 100)."""
    series = []
    for i in range(6):
        ts, v = _series(1500, 60, 10 + i)
        stamps = [T0 + timedelta(hours=k) for k in range(1500)]
        spike = 700 + 50 * i
        v[spike] += 40.0 * (1 + i)  # spikes of very different sizes: the best threshold depends on the files
        parts = nab.file_parts(f"{'abc'[i % 3]}/f{i}.csv", stamps, [(stamps[spike - 30], stamps[spike + 30])])
        prob = nab.probation_length(1500)
        errors, spreads = nab._model_errors(v, prob, nab.rows_per_day(ts))
        series.append((parts, v, errors, spreads, prob))
    prof = {"tp": 1.0, "fp": 0.11, "fn": 1.0}
    cv = nab.cross_validate(series, {"standard": prof})
    res = cv["profiles"]["standard"]
    folds = res["category"]["folds"]
    assert [f["fold"] for f in folds] == ["a", "b", "c"] and [f["files"] for f in folds] == [2, 2, 2]
    assert [f["fold"] for f in res["halves"]["folds"]] == ["hash half 0", "hash half 1"]
    parts = [s[0] for s in series]
    for f in folds:
        assert -200.0 < f["held_out"] <= 100.0 and set(f["chosen"]) == set(nab.CV_GRID)
        train = [i for i, p in enumerate(parts) if not p.name.startswith(f["fold"] + "/")]
        chosen = f["chosen"]
        scores = [nab.scores_from_errors(v, e, sp, prob, chosen) for _, v, e, sp, prob in series]
        thr, _ = nab.corpus_sweep([parts[i] for i in train], [scores[i] for i in train], prof)
        assert f["threshold"] == round(thr, 4)
    assert res["category"]["pooled"] <= 100.0 and res["in_sample"] <= 100.0
    assert [name for name, _, _ in cv["sensitivity"]] == list(nab.CV_GRID)


def test_tail_calibration_scales_a_bursty_series_down() -> None:
    """The same spike scores lower on a series whose ordinary rows are often surprising (heavy tails) than
    on a calm one: the score is about rarity on the series' own terms."""
    rng = np.random.default_rng(3)
    n, prob = 3000, 450
    calm = rng.normal(50, 1, n)
    bursty = rng.normal(50, 1, n) + (rng.random(n) < 0.08) * rng.uniform(5, 15, n)  # calm, with 8% bursts
    for v in (calm, bursty):
        v[2500] = 80.0
    out = []
    for v in (calm, bursty):
        errors, spreads = nab._model_errors(v, prob, 288)
        off = nab.scores_from_errors(v, errors, spreads, prob, {"tail_z": 0.0, "margin": 10.0})
        on = nab.scores_from_errors(v, errors, spreads, prob, {"margin": 10.0})
        out.append((off, on))
    (calm_off, calm_on), (bursty_off, bursty_on) = out
    assert calm_on[2500] == pytest.approx(calm_off[2500])  # a calm series' tail is under tail_z: unchanged
    assert bursty_on[2500] < bursty_off[2500]
    assert np.mean(bursty_on[prob:] > 0.3) < np.mean(bursty_off[prob:] > 0.3)
