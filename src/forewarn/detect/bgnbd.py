"""BG/NBD: the beta-geometric / negative-binomial model of repeat purchasing (Fader, Hardie & Lee 2005).

A customer buys at a Poisson rate ``lambda`` (gamma distributed across customers, shape ``r``, rate
``alpha``) and after each purchase "dies" with probability ``p`` (beta distributed, ``a``, ``b``). From a
customer's frequency / recency / age summary (``x`` repeat purchases, the last at ``t_x``, observed for ``T``)
the model gives the probability that they are still active and how many purchases to expect from them.

Population parameters are fitted once (on all customers or a sample, by maximum likelihood: the closed-form
log-likelihood, L-BFGS-B on log-parameters) and then applied to every customer, which keeps the per-customer
work to a few array operations.

>>> from datetime import date
>>> events = pl.DataFrame({"customer_id": ["a", "a", "a", "b"],
...                        "ts": [date(2026, 1, 1), date(2026, 1, 1), date(2026, 1, 15), date(2026, 1, 8)]})
>>> summarize(events, as_of=date(2026, 1, 29)).select("customer_id", "frequency", "recency", "T").rows()
[('a', 1, 2.0, 4.0), ('b', 0, 0.0, 3.0)]
>>> m = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
>>> round(float(p_alive(m, 2, 30.43, 38.86)), 4)
0.7266
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, datetime

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1

Array = NDArray[np.float64]


@dataclass(frozen=True)
class BGNBDParams:
    """Fitted population parameters. ``alpha`` is in the time unit the summary was built with."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = math.nan  # total over the customers it was fitted on
    n_customers: int = 0
    unit_days: float = 7.0  # one model time unit in days (weeks by default, as in the paper)
    # Not a BG/NBD parameter: the pooled gamma shape of the same customers' gaps between purchase days (how
    # regular their buying is; 1 = Poisson-like), estimated on the same data and kept with the fit so every
    # run that uses the model uses it too (see forewarn.detect.cadence). NaN: not estimated.
    gap_shape: float = math.nan
    # Not a BG/NBD parameter either: the same customers' estimated chance that a gap between purchases is a
    # lapse (they stopped for good), see forewarn.detect.cadence.estimated_lapse_rate. NaN: not estimated.
    lapse_rate: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def fitted(self) -> bool:
        """Whether the BG/NBD parameters are there (False: only the pooled ``gap_shape``, see
        :meth:`shape_only`).

        >>> BGNBDParams(0.24, 4.4, 0.79, 2.4).fitted, BGNBDParams.shape_only(4.0).fitted
        (True, False)
        """
        return all(math.isfinite(v) for v in (self.r, self.alpha, self.a, self.b))

    @classmethod
    def shape_only(cls, gap_shape: float, unit_days: float = 7.0) -> BGNBDParams:
        """No BG/NBD fit (too few customers for one), only the population's pooled gap shape."""
        return cls(math.nan, math.nan, math.nan, math.nan, unit_days=unit_days, gap_shape=gap_shape)


def _arrays(*values: ArrayLike) -> tuple[Array, ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


def log_likelihood(params: BGNBDParams | tuple[float, float, float, float], x, t_x, T) -> Array:
    """Per-customer log-likelihood of (``x``, ``t_x``, ``T``) under the BG/NBD (FHL 2005, eq. 6).

    ``L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
          * [(alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x)]``, summed in log space.

    >>> round(float(log_likelihood((1.0, 1.0, 1.0, 1.0), 0, 0.0, 1.0)), 6)  # Gamma(1)*1*(2)^-1 -> log(1/2)
    -0.693147
    """
    r, alpha, a, b = _unpack(params)
    x, t_x, T = _arrays(x, t_x, T)
    head = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + betaln(a, b + x) - betaln(a, b)
    stay = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        # For x = 0 the "died after the last purchase" term does not exist; b + x - 1 may be <= 0 there.
        died = np.where(
            x > 0,
            math.log(a) - np.log(np.where(x > 0, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return head + np.logaddexp(stay, died)


def _unpack(params: BGNBDParams | tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    if isinstance(params, BGNBDParams):
        return params.r, params.alpha, params.a, params.b
    r, alpha, a, b = params
    return float(r), float(alpha), float(a), float(b)


def fit(
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    unit_days: float = 7.0,
    init: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> BGNBDParams:
    """Maximum-likelihood population parameters from per-customer summaries.

    Identical (x, t_x, T) rows are merged into weights first, so large populations cost little more than the
    number of distinct summaries. Raises ``ValueError`` when there is nothing to fit or the optimiser fails.

    >>> rng = np.random.default_rng(0)
    >>> m = fit([0, 1, 2, 5, 0, 3], [0, 4, 9, 20, 0, 14], [30, 30, 25, 28, 10, 20])
    >>> m.r > 0 and m.alpha > 0 and m.a > 0 and m.b > 0
    True
    """
    x, t_x, T = _arrays(x, t_x, T)
    if x.size == 0:
        raise ValueError("BG/NBD fit: no customers to fit on")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T) or np.any(x != np.round(x)):
        raise ValueError("BG/NBD fit: need integer frequency >= 0 and 0 <= recency <= T for every customer")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    rows, inverse = np.unique(np.column_stack([x, t_x, T]), axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=w)
    ux, ut, uT = rows[:, 0], rows[:, 1], rows[:, 2]
    total = counts.sum()

    def objective(log_params: Array) -> tuple[float, Array]:
        value, grad = _ll_and_grad(np.exp(log_params), ux, ut, uT, counts)
        if not np.isfinite(value):
            return 1e300, np.zeros(4)
        # Chain rule to log-parameters; both scaled to a per-customer mean for a well-conditioned optimiser.
        return -value / total, -grad * np.exp(log_params) / total

    result = minimize(
        objective,
        np.log(np.asarray(init, dtype=np.float64)),
        method="L-BFGS-B",
        jac=True,
        bounds=[(-12.0, 12.0)] * 4,
        options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 2000},
    )
    if not np.isfinite(result.fun) or result.fun >= 1e299:
        raise ValueError(f"BG/NBD fit did not converge: {result.message}")
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BGNBDParams(r, alpha, a, b, -float(result.fun) * float(total), int(round(total)), unit_days)


def _ll_and_grad(theta: Array, x: Array, t_x: Array, T: Array, w: Array) -> tuple[float, Array]:
    """Weighted total log-likelihood and its gradient in (r, alpha, a, b), from the closed form."""
    r, alpha, a, b = (float(v) for v in theta)
    ll = log_likelihood((r, alpha, a, b), x, t_x, T)
    stay = -(r + x) * np.log(alpha + T)
    # Weights of the two terms inside log-sum-exp: w_stay + w_died = 1 per customer.
    w_stay = np.exp(
        stay - (ll - (gammaln(r + x) - gammaln(r) + r * math.log(alpha) + betaln(a, b + x) - betaln(a, b)))
    )
    w_died = 1.0 - w_stay
    bx1 = np.where(x > 0, b + x - 1, 1.0)
    d_r = (
        digamma(r + x)
        - digamma(r)
        + math.log(alpha)
        - w_stay * np.log(alpha + T)
        - w_died * np.log(alpha + t_x)
    )
    d_alpha = r / alpha - (r + x) * (w_stay / (alpha + T) + w_died / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a + b + x) + w_died / a
    d_b = digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b) - w_died / bx1
    # Elementwise products and sums, not np.dot: BLAS thread hand-offs cost more than the work here and
    # stall badly on a busy machine.
    grad = np.array([np.sum(w * d) for d in (d_r, d_alpha, d_a, d_b)])
    return float(np.sum(w * ll)), grad


def p_alive(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(the customer is still active at ``T``) given ``x`` repeat purchases, the last at ``t_x``.

    ``1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``; customers without repeat purchases are alive
    with probability 1 under the model (they cannot have "died" yet).

    >>> m = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    >>> [round(float(v), 3) for v in p_alive(m, [0, 4, 4], [0, 30, 5], [39, 39, 39])]
    [1.0, 0.719, 0.01]
    """
    r, alpha, a, b = _unpack(params)
    x, t_x, T = _arrays(x, t_x, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds = (
            math.log(a)
            - np.log(np.where(x > 0, b + x - 1, 1.0))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
    # 1 / (1 + exp(log_odds)), written to stay finite for large odds.
    out = np.exp(-np.logaddexp(0.0, log_odds))
    return np.where(x > 0, out, 1.0)


def expected_purchases(params: BGNBDParams, t: ArrayLike) -> Array:
    """E[X(t)]: purchases expected in ``(0, t]`` from a customer just acquired (FHL 2005, eq. 7).

    >>> m = BGNBDParams(r=0.242593, alpha=4.413532, a=0.792886, b=2.425752)  # CDNOW, weeks
    >>> round(float(expected_purchases(m, 52)), 3)  # the paper's 1.444 for a year
    1.444
    """
    r, alpha, a, b = _unpack(params)
    (t,) = _arrays(t)
    frac = (a + b - 1) / (a - 1)
    return frac * (
        1 - np.exp(r * (np.log(alpha) - np.log(alpha + t))) * hyp2f1(r, b, a + b - 1, t / (alpha + t))
    )


def conditional_expected_purchases(params: BGNBDParams, t: ArrayLike, x, t_x, T) -> Array:
    """E[Y(t) | x, t_x, T]: purchases expected in the next ``t`` units from a customer with this history.

    FHL 2005, eq. 10.

    >>> m = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    >>> round(float(conditional_expected_purchases(m, 39, 2, 30.43, 38.86)), 3)
    1.226
    """
    r, alpha, a, b = _unpack(params)
    t, x, t_x, T = _arrays(t, x, t_x, T)
    head = (a + b + x - 1) / (a - 1)
    decay = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    body = 1 - decay * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    return head * body * p_alive(params, x, t_x, T)


def summarize(
    events: pl.DataFrame,
    as_of: date | datetime,
    *,
    unit_days: float = 7.0,
    customer_col: str = "customer_id",
    ts_col: str = "ts",
) -> pl.DataFrame:
    """Frequency / recency / age per customer from purchase events up to and including ``as_of``'s day.

    Same-day purchases are merged (one purchase day); ``frequency`` counts repeat purchase days (days after
    the first), ``recency`` is the time from the first to the last purchase day and ``T`` from the first
    purchase day to ``as_of``'s day, both in units of ``unit_days`` days. Days are UTC calendar days.
    Events after ``as_of`` are ignored (point-in-time).

    Columns: customer_id, frequency, recency, T, first_day, last_day, days_since_last (in days).
    """
    is_date = events.schema[ts_col] == pl.Date()
    day = pl.col(ts_col) if is_date else pl.col(ts_col).dt.date()
    cutoff = as_of.date() if isinstance(as_of, datetime) else as_of
    if isinstance(as_of, datetime) and not is_date:
        events = events.filter(pl.col(ts_col) <= as_of)  # later the same day is still the future
    days = (
        events.lazy()
        .select(pl.col(customer_col).alias("customer_id"), day.alias("day"))
        .filter(pl.col("day") <= cutoff)
        .unique()
    )
    end = pl.lit(cutoff, dtype=pl.Date())
    return (
        days.group_by("customer_id")
        .agg(
            (pl.len() - 1).cast(pl.Int64).alias("frequency"),
            pl.col("day").min().alias("first_day"),
            pl.col("day").max().alias("last_day"),
        )
        .with_columns(
            ((pl.col("last_day") - pl.col("first_day")).dt.total_days() / unit_days).alias("recency"),
            ((end - pl.col("first_day")).dt.total_days() / unit_days).alias("T"),
            (end - pl.col("last_day")).dt.total_days().alias("days_since_last"),
        )
        .select("customer_id", "frequency", "recency", "T", "first_day", "last_day", "days_since_last")
        .sort("customer_id")
        .collect()
    )
