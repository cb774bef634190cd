"""BG/NBD: the closed forms against direct numerical integration of the model, parameter recovery, CDNOW."""

from __future__ import annotations

import importlib.util
import math
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import special

from forewarn.detect import bgnbd

PARAMS = bgnbd.BGNBDParams(r=0.8, alpha=3.0, a=1.6, b=2.5)
HISTORIES = [(0, 0.0, 5.0), (1, 2.0, 6.0), (3, 4.5, 5.0), (4, 1.0, 8.0)]


def _integrate(fn) -> float:
    """E[fn(lam, p)] under the gamma(r, alpha) x beta(a, b) mixing distributions, by Gauss quadrature.

    Generalised Gauss-Laguerre nodes carry the gamma density and Gauss-Jacobi nodes the beta density, so the
    model's individual-level likelihood is integrated directly, independent of the closed forms under test.
    """
    u, wu = special.roots_genlaguerre(160, PARAMS.r - 1)
    z, wz = special.roots_jacobi(160, PARAMS.b - 1, PARAMS.a - 1)
    lam, p = np.meshgrid(u / PARAMS.alpha, (1 + z) / 2, indexing="ij")
    weights = np.outer(wu / wu.sum(), wz / wz.sum())
    return float(np.sum(weights * fn(lam, p)))


def _alive_term(lam: np.ndarray, p: np.ndarray, x: int, T: float) -> np.ndarray:
    return (1 - p) ** x * lam**x * np.exp(-lam * T)


def _died_term(lam: np.ndarray, p: np.ndarray, x: int, t_x: float) -> np.ndarray:
    return p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0 * lam


@pytest.mark.parametrize(("x", "t_x", "T"), HISTORIES)
def test_likelihood_matches_numerical_integral(x: int, t_x: float, T: float) -> None:
    direct = _integrate(lambda lam, p: _alive_term(lam, p, x, T) + _died_term(lam, p, x, t_x))
    closed = float(np.exp(bgnbd.log_likelihood(PARAMS, x, t_x, T)))
    assert closed == pytest.approx(direct, rel=1e-6)


@pytest.mark.parametrize(("x", "t_x", "T"), HISTORIES)
def test_p_alive_and_conditional_expectation_match_integrals(x: int, t_x: float, T: float) -> None:
    total = _integrate(lambda lam, p: _alive_term(lam, p, x, T) + _died_term(lam, p, x, t_x))
    alive = _integrate(lambda lam, p: _alive_term(lam, p, x, T))
    assert float(bgnbd.p_alive(PARAMS, x, t_x, T)) == pytest.approx(alive / total, rel=1e-6)
    t = 4.0
    # Alive at T with (lam, p): expected further purchases in (T, T + t] are (1 - exp(-lam p t)) / p.
    future = _integrate(lambda lam, p: _alive_term(lam, p, x, T) * (1 - np.exp(-lam * p * t)) / p)
    value = float(bgnbd.conditional_expected_purchases(PARAMS, t, x, t_x, T))
    assert value == pytest.approx(future / total, rel=1e-5)


def test_unconditional_expectation_matches_integral() -> None:
    t = 10.0
    direct = _integrate(lambda lam, p: (1 - np.exp(-lam * p * t)) / p)
    assert float(bgnbd.expected_purchases(PARAMS, t)) == pytest.approx(direct, rel=1e-6)


def test_likelihood_known_value_and_stability() -> None:
    # r = alpha = a = b = 1, x = 0, T = 1: Gamma(1) 1^1 / Gamma(1) * (1 + 1)^-1 = 1/2.
    assert float(bgnbd.log_likelihood((1, 1, 1, 1), 0, 0.0, 1.0)) == pytest.approx(math.log(0.5))
    # Heavy buyers far out: terms underflow individually but log-sum-exp keeps them finite.
    ll = bgnbd.log_likelihood(PARAMS, np.array([400, 900]), np.array([50.0, 99.0]), np.array([60.0, 100.0]))
    assert np.all(np.isfinite(ll))
    alive = bgnbd.p_alive(PARAMS, [900, 900], [1.0, 99.95], [100.0, 100.0])
    assert alive[0] < 1e-12 and 0.5 < alive[1] <= 1.0


def _simulate(n: int, r: float, alpha: float, a: float, b: float, T: float, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    xs, txs = np.zeros(n), np.zeros(n)
    for i in range(n):
        t, x = 0.0, 0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T:
                break
            x += 1
            txs[i] = t
            if rng.random() < p[i]:
                break
        xs[i] = x
    return xs, txs, np.full(n, T)


def test_fit_recovers_simulated_parameters() -> None:
    truth = (0.5, 2.0, 1.2, 3.0)
    x, t_x, T = _simulate(6000, *truth, T=40.0, seed=3)
    fitted = bgnbd.fit(x, t_x, T)
    for got, want in zip((fitted.r, fitted.alpha, fitted.a, fitted.b), truth, strict=True):
        assert got == pytest.approx(want, rel=0.3)
    # The fit is a maximum: nudging any parameter lowers the likelihood.
    best = bgnbd.log_likelihood(fitted, x, t_x, T).sum()
    assert best == pytest.approx(fitted.log_likelihood)
    for i in range(4):
        theta = [fitted.r, fitted.alpha, fitted.a, fitted.b]
        theta[i] *= 1.05
        assert bgnbd.log_likelihood(tuple(theta), x, t_x, T).sum() < best


def test_fit_rejects_bad_summaries() -> None:
    with pytest.raises(ValueError, match="no customers"):
        bgnbd.fit([], [], [])
    with pytest.raises(ValueError, match="recency <= T"):
        bgnbd.fit([1], [5.0], [3.0])


def test_summarize_merges_same_day_and_is_point_in_time() -> None:
    ts = [
        datetime(2026, 1, 1, 9, tzinfo=UTC),
        datetime(2026, 1, 1, 17, tzinfo=UTC),  # same day: merged
        datetime(2026, 1, 15, 8, tzinfo=UTC),
        datetime(2026, 1, 29, 8, tzinfo=UTC),
        datetime(2026, 1, 29, 18, tzinfo=UTC),  # later the same day as as_of: not known yet
        datetime(2026, 2, 5, tzinfo=UTC),  # after as_of
    ]
    events = pl.DataFrame({"customer_id": ["a"] * 6, "ts": ts})
    s = bgnbd.summarize(events, datetime(2026, 1, 29, 12, tzinfo=UTC), unit_days=7.0)
    assert s.select("frequency", "recency", "T", "days_since_last").row(0) == (2, 4.0, 4.0, 0)
    s = bgnbd.summarize(events, datetime(2026, 1, 29, 7, tzinfo=UTC), unit_days=1.0)
    assert s.select("frequency", "recency", "T", "days_since_last").row(0) == (1, 14.0, 28.0, 14)


# -- CDNOW: the published figures ---------------------------------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "../shared/datasets/cdnow"


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_cdnow", Path(__file__).resolve().parents[1] / "bench/cdnow.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cdnow_summary() -> pl.DataFrame:
    if not (DATA / "CDNOW_sample.txt").exists():
        pytest.skip(f"CDNOW sample not found under {DATA}")
    bench = _bench()
    return bgnbd.summarize(bench.load_transactions(DATA / "CDNOW_sample.txt"), date(1997, 9, 30))


@pytest.mark.datasets
def test_cdnow_reproduces_published_parameters(cdnow_summary: pl.DataFrame) -> None:
    x, t_x, T = (cdnow_summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    assert cdnow_summary.height == 2357 and int(x.sum()) == 2457
    m = bgnbd.fit(x, t_x, T)
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert getattr(m, name) == pytest.approx(value, rel=0.01), name
    assert m.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    # Same summary as the lifetimes project's published one (rounded to 2 decimals there).
    ref = pl.read_csv(DATA / "cdnow_customers_summary.csv")
    assert np.allclose(ref["recency"].to_numpy(), np.round(t_x, 2), atol=0.006)
    assert np.array_equal(ref["frequency"].to_numpy(), x)


@pytest.mark.datasets
def test_cdnow_p_alive_matches_lifetimes(cdnow_summary: pl.DataFrame) -> None:
    lifetimes = pytest.importorskip("lifetimes", reason="lifetimes not installed (optional extra 'oracle')")
    x, t_x, T = (cdnow_summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    fitter = lifetimes.BetaGeoFitter().fit(x, t_x, T)
    theirs = np.asarray(fitter.conditional_probability_alive(x, t_x, T), dtype=float)
    ours = bgnbd.p_alive(bgnbd.fit(x, t_x, T), x, t_x, T)
    assert np.max(np.abs(ours - theirs)) < 1e-4
