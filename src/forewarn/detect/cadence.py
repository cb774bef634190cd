"""The cadence trip wire: a customer who has broken their own rhythm of buying, visiting or getting in touch.

Three conditions, each judged against the customer's own history (same-day events merged, UTC days):

- ``cadence:lapse:<event_type>`` (kind ``purchase``; event types ``purchase`` and ``visit`` each have their
  own rhythm), for customers with enough history (``bgnbd_min_repeat`` repeat days) and a population BG/NBD
  model: P(alive) below ``p_alive_threshold``. The population parameters come from context ``bgnbd`` (a
  :class:`~forewarn.detect.bgnbd.BGNBDParams`, or a dict of them by event type, fitted once and broadcast to
  every bucket) or are fitted here on (a deterministic sample of) the customers in the frame, using rows up to
  ``as_of`` only.
  For them a silence over ``overdue_factor`` x their median gap that their own gap distribution makes
  unlikely enough fires too (rule ``rhythm``): BG/NBD assumes irregular, Poisson-like buying and is slow to
  doubt a steady customer.
- the same condition for customers with fewer events (at least ``min_events`` days), or when no model can be
  fitted: the interval rule, overdue by ``overdue_factor`` x the customer's own median gap ("came every 3
  months, not in 6") and a gap that long unlikely enough under their gap distribution.

The gap distribution is a gamma with the mean and spread of the customer's last ``max_gaps`` gaps. Without a
population, "unlikely enough" is below ``rhythm_alpha`` (the shape capped at 8 for fewer than
``bgnbd_min_repeat`` gaps: a few gaps say little about the spread). With one (a BG/NBD fit, or with fewer
than ``min_fit_customers`` customers at least ``shape_min_customers`` with three gaps: its ``gap_shape``, the
pooled regularity of all its customers, see :func:`pooled_gap_shape`), the customer's spread is shrunk toward
the population's (``shape_prior_gaps``), the uncertainty of their mean gap is integrated out (the posterior
predictive, :func:`silence_survival`; then ``min_events_rhythm`` event days suffice), and the silence is
weighed against the population's chance that a gap is a lapse (``lapse_rate``, estimated from all its
customers' silences by EM, :func:`estimated_lapse_rate`, with ``lapse_prior`` as its prior) into a P(alive)
below ``p_alive_threshold`` (evidence ``p_alive_rhythm``): a few gaps look more regular than the customer is,
and a fixed per-gap alpha makes alarms of alpha of all ordinary gaps whatever the base rate (how often
customers stop differs a lot between businesses and decides how long a silence must be).
- ``cadence:quiet:contact`` (kind ``contact``): a customer who usually gets in touch regularly
  (``contact_min_events`` contact days within ``contact_lookback_days`` before their last one) has been quiet
  for ``contact_overdue_factor`` x their median gap.

Context used: ``bgnbd`` (optional, see above; a mapping entry of ``None`` for an event type means "no
model": the interval rule only). Findings are severity ``info``, topic ``account``.

Backtests: :meth:`CadenceTripWire.score_history` gives every daily run's findings in one vectorised pass (a
customer's rhythm only changes on their event days), refitting the population BG/NBD every ``refit_days``
on the data up to each refit; ``detect`` given those models returns the same findings at each run.

>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> visits = pl.DataFrame({"customer_id": ["c1"] * 4, "event_type": ["visit"] * 4,
...                        "ts": [t0 + timedelta(days=90 * i) for i in range(4)]})
>>> CadenceTripWire().detect({"purchase": visits}, t0 + timedelta(days=270 + 150)).height  # 1.7x: not yet
0
>>> out = CadenceTripWire().detect({"purchase": visits}, t0 + timedelta(days=270 + 200))
>>> out.select("condition", "score").row(0)
('cadence:lapse:visit', 2.2222222222222223)
>>> print(out["explanation"][0])
It has been 7 months since your last visit; you usually visit about every 3 months.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.stats import beta, gamma

from forewarn.detect import bgnbd
from forewarn.detect.base import Params, as_findings, empty_findings, params_with, point_in_time
from forewarn.detect.history import daily_runs
from forewarn.timeutil import utc

EVENT_WORDS = {  # (noun for "your last ...", verb for "you usually ...")
    "purchase": ("purchase", "shop with us"),
    "visit": ("visit", "visit"),
    "contact": ("contact with us", "get in touch"),
}


@dataclass(frozen=True)
class CadenceParams(Params):
    """Parameters of the cadence trip wire; defaults suit retail purchases / visits and support contacts."""

    event_types: tuple[str, ...] = ("purchase", "visit")  # purchase-kind event types, each its own rhythm
    min_events: int = 4  # event days before the interval rule speaks (3 gaps: a median worth the name)
    # With the population's pooled gap shape, fewer suffice: the posterior predictive widens for a mean read
    # from few gaps, so 3 event days (2 gaps) only speak after a correspondingly longer silence.
    min_events_rhythm: int = 3
    # Interval rule: overdue when the silence exceeds this x the median gap. For fairly regular gaps
    # (gamma-like, CV 0.5) a gap over 2x the median is a ~5% event; over 1.5x it is ~20%, too many alarms.
    overdue_factor: float = 2.0
    max_gaps: int = 12  # the median gap is over the customer's last this many gaps (rhythms change)
    bgnbd_min_repeat: int = 5  # repeat days from which BG/NBD P(alive) decides instead of the interval rule
    # Lapsed when P(alive) (BG/NBD's, or the rhythm's) is below this. Chosen with lapse_prior and
    # lapse_prior_gaps by bench/tune_cadence.py on the tuning seeds only (1-3, both simulator worlds).
    p_alive_threshold: float = 0.05
    rhythm_alpha: float = 0.005  # steady rhythm: lapsed when a gap this long has at most this probability
    # How regular a customer's gaps are (the gamma shape behind ``rhythm_alpha``) is read from a few gaps,
    # and a few gaps look more regular than the customer is (12 gamma-4 gaps often give a shape over 8, which
    # puts an ordinary 2x gap below 0.5%). With a population model the customer's squared coefficient of
    # variation is shrunk toward the pooled one of all customers' gaps, worth this many gaps of their own.
    shape_prior_gaps: float = 10.0
    # With a population model, the rhythm rule asks for P(alive) < p_alive_threshold, from the customer's gap
    # distribution and the chance that a gap is a lapse (the customer stopped for good), estimated from the
    # population with this prior: ~1 in 500 gaps. With the threshold 0.05 a silence fires once it has at
    # most ~0.05 x the lapse rate probability for a customer still buying.
    lapse_prior: float = 0.002
    # With a population model the rate is estimated from the population's own silences (see
    # estimated_lapse_rate), with lapse_prior worth this many gaps as its prior.
    lapse_prior_gaps: float = 1000.0
    unit_days: float = 7.0  # BG/NBD time unit (weeks, as in the literature); P(alive) does not depend on it
    min_fit_customers: int = 200  # fewer customers than this: no BG/NBD fit here
    # The pooled gap shape needs far fewer customers than a BG/NBD fit: from this many customers with three
    # or more gaps the rhythm rule weighs silences against it even without a BG/NBD fit (a few hundred
    # visitors are too few for BG/NBD, and each one's own handful of gaps says little about their spread).
    shape_min_customers: int = 10
    fit_sample: int = 20_000  # at most this many customers (a deterministic sample) for the fit
    expect_horizon_days: int = 30  # evidence: purchases expected in the next this many days
    contact_min_events: int = 4  # contact days (within the lookback) before "usually gets in touch" is known
    contact_overdue_factor: float = 2.0
    contact_lookback_days: int = 365  # the contact rhythm is read from this many days before the last contact
    # score_history: refit the population BG/NBD this often, on the data up to the refit only. Population
    # parameters move slowly once there is history, and each fit costs ~0.2 s whatever the population size.
    refit_days: int = 28


def humanize_days(days: float) -> str:
    """A duration as people say it.

    >>> humanize_days(1), humanize_days(12), humanize_days(50), humanize_days(91), humanize_days(800)
    ('1 day', '12 days', '7 weeks', '3 months', '2 years')
    """
    if days < 21:
        n, unit = round(days), "day"
    elif days < 84:
        n, unit = round(days / 7), "week"
    elif days < 700:
        n, unit = round(days / 30.44), "month"
    else:
        n, unit = round(days / 365.25), "year"
    return f"{max(n, 1)} {unit}{'' if n == 1 else 's'}"


def interval_stats(
    days: pl.DataFrame, as_of_day: date, max_gaps: int, lookback_days: int | None
) -> pl.DataFrame:
    """Per customer: event days, last day, median / max gap (trailing ``max_gaps``) and days since the last.

    ``days`` has one row per (customer_id, day). With ``lookback_days`` only days within that many days before
    the customer's last day count, so an old rhythm does not define today's.

    >>> d = pl.DataFrame({"customer_id": ["a"] * 4,
    ...                   "day": [date(2026, 1, 1), date(2026, 1, 8), date(2026, 1, 22), date(2026, 1, 29)]})
    >>> interval_stats(d, date(2026, 2, 28), 12, None).select("n_days", "median_gap", "days_since").row(0)
    (4, 7.0, 30)
    """
    frame = days.sort("customer_id", "day")
    if lookback_days is not None:
        last = pl.col("day").max().over("customer_id")
        frame = frame.filter(pl.col("day") >= last - pl.duration(days=lookback_days))
    # Sorted by customer: the gap to the previous row, null at each customer's first day (no hash partition).
    same = pl.col("customer_id") == pl.col("customer_id").shift(1)
    gap = pl.when(same).then((pl.col("day") - pl.col("day").shift(1)).dt.total_days().cast(pl.Float64))
    return (
        frame.with_columns(gap.alias("gap"))
        .group_by("customer_id")
        .agg(
            pl.len().alias("n_days"),
            pl.col("day").max().alias("last_day"),
            pl.col("gap").drop_nulls().tail(max_gaps).median().alias("median_gap"),
            pl.col("gap").drop_nulls().tail(max_gaps).max().alias("max_gap"),
            pl.col("gap").drop_nulls().tail(max_gaps).mean().alias("mean_gap"),
            pl.col("gap").drop_nulls().tail(max_gaps).std().alias("sd_gap"),
        )
        .with_columns((pl.lit(as_of_day) - pl.col("last_day")).dt.total_days().alias("days_since"))
    )


def pooled_gap_shape(days: pl.DataFrame, max_gaps: int, min_gaps: int = 3, min_customers: int = 1) -> float:
    """The gamma shape of the population's gaps between event days: 1 / the pooled squared coefficient of
    variation of every customer's last ``max_gaps`` gaps (customers with at least ``min_gaps``), each gap
    measured against its customer's own mean (NaN with fewer than ``min_customers`` such customers).

    >>> a = [date(2026, 1, x) for x in (1, 6, 9, 16, 20)]  # gaps 5, 3, 7, 4
    >>> b = [date(2026, 2, x) for x in (1, 3, 9, 11, 17)]  # gaps 2, 6, 2, 6
    >>> d = pl.DataFrame({"customer_id": ["a"] * 5 + ["b"] * 5, "day": a + b})
    >>> round(pooled_gap_shape(d, 12), 2)  # 6 degrees of freedom, pooled CV^2 (0.388 + 1.0) / 6
    4.32
    """
    frame = days.sort("customer_id", "day")
    same = pl.col("customer_id") == pl.col("customer_id").shift(1)
    gap = pl.when(same).then((pl.col("day") - pl.col("day").shift(1)).dt.total_days().cast(pl.Float64))
    per = (
        frame.with_columns(gap.alias("gap"))
        .drop_nulls("gap")
        .group_by("customer_id")
        .agg(pl.col("gap").tail(max_gaps))
        .with_columns(n=pl.col("gap").list.len(), m=pl.col("gap").list.mean())
        .filter(pl.col("n") >= min_gaps, pl.col("m") > 0)
        .with_columns(ss=pl.col("gap").list.var(ddof=1) * (pl.col("n") - 1) / pl.col("m") ** 2)
    )
    if per.height < max(min_customers, 1):
        return math.nan
    dof = float((per["n"] - 1).sum())
    cv2 = float(per["ss"].sum()) / dof if dof else math.nan
    return 1.0 / cv2 if cv2 and math.isfinite(cv2) else math.nan


def silence_survival(
    days_since: np.ndarray,
    mean_gap: np.ndarray,
    sd_gap: np.ndarray,
    n_gaps: np.ndarray,
    prior_shape: np.ndarray,
    params: CadenceParams,
) -> tuple[np.ndarray, np.ndarray]:
    """P(a gap at least ``days_since`` long) for each customer still buying, and the gamma shape used.

    Gaps are gamma with the customer's mean and spread (trailing ``max_gaps``). With the population's pooled
    shape (``prior_shape`` finite) the customer's squared coefficient of variation is shrunk toward it
    (``shape_prior_gaps`` pseudo-gaps) and the mean's own uncertainty is integrated out: for n gamma gaps
    summing to S and a scale-free prior on the scale, the next gap X has X / S ~ beta-prime (shape, n x shape),
    so P(X > s) = I_{S / (s + S)}(n x shape, shape) (the posterior predictive). Without a population shape,
    the customer's own shape, capped at 8 for fewer than ``bgnbd_min_repeat`` gaps (a few gaps look more
    regular than they are).

    >>> p, k = silence_survival(np.array([30.0]), np.array([10.0]), np.array([5.0]), np.array([10]),
    ...                         np.array([4.0]), CadenceParams())
    >>> round(float(k[0]), 2), float(p[0]) < 0.01
    (4.0, True)
    """
    p = params
    mean, sd = mean_gap, np.nan_to_num(sd_gap, nan=0.0)
    cap = np.where(n_gaps >= p.bgnbd_min_repeat, 50.0, 8.0)
    cv2 = sd**2 / np.maximum(mean**2, 1e-9)
    own_dof = np.maximum(np.minimum(n_gaps, p.max_gaps) - 1, 0).astype(np.float64)
    k = p.shape_prior_gaps
    with np.errstate(invalid="ignore", divide="ignore"):
        shrunk = (k / prior_shape + own_dof * cv2) / (k + own_dof)
    known = np.isfinite(prior_shape)
    cv2 = np.where(known, shrunk, cv2)
    shape = np.clip(1.0 / np.maximum(cv2, 1e-9), 1.0, np.where(known, 50.0, cap))
    p_gap = gamma.sf(days_since, shape, scale=mean / shape)
    n = np.minimum(n_gaps, p.max_gaps).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        predictive = beta.sf(days_since / (days_since + mean * n), shape, n * shape)
    return np.where(known & (n > 0), predictive, p_gap), shape


def estimated_lapse_rate(p_gap: np.ndarray, gaps: float, prior: float, prior_gaps: float) -> float:
    """The population's chance that a gap is a lapse (the customer stopped for good), by EM.

    Each customer's current silence is either an ordinary gap (probability ``p_gap`` of one this long) or a
    lapse; with rate ``rho`` the posterior of a lapse is ``rho / (rho + (1 - rho) p_gap)``, and ``rho`` is
    the expected lapses over the gaps they ended plus the ``gaps`` completed, with ``prior_gaps`` pseudo-gaps
    at ``prior`` (a small population says little). How often customers stop differs a lot between
    businesses, and it decides how long a silence must be before it is more likely a lapse than a late one.

    >>> silences = np.r_[np.full(95, 0.5), np.full(5, 1e-9)]  # 5 of 100 customers silent far too long
    >>> round(estimated_lapse_rate(silences, 1000.0, 0.005, 100.0), 4)  # ~(5 + 95 x 2 rho + 0.5) / 1106
    0.006
    """
    rho = prior
    for _ in range(100):
        post = rho / (rho + (1 - rho) * p_gap)
        lapses = float(post.sum())
        new = (lapses + prior * prior_gaps) / (gaps + lapses + prior_gaps)
        if abs(new - rho) < 1e-9:
            return new
        rho = new
    return rho


def _confidence_from_gaps(n_gaps: np.ndarray) -> np.ndarray:
    # More gaps seen, more sure of the rhythm: 2 gaps -> 0.5, 6 -> 0.75, 12 -> 0.86.
    return np.clip(n_gaps / (n_gaps + 2.0), 0.0, 1.0)


def humanize_expr(days: pl.Expr) -> pl.Expr:
    """:func:`humanize_days` as a Polars expression (same rounding: half to even, as Python's ``round``).

    >>> pl.select(humanize_expr(pl.Series([1.0, 12.0, 50.0, 91.0, 800.0]))).to_series().to_list()
    ['1 day', '12 days', '7 weeks', '3 months', '2 years']
    """
    d = days.cast(pl.Float64)
    n = (
        pl.when(d < 21)
        .then(d.round(0))
        .when(d < 84)
        .then((d / 7).round(0))
        .when(d < 700)
        .then((d / 30.44).round(0))
        .otherwise((d / 365.25).round(0))
        .cast(pl.Int64)
    )
    unit = pl.when(d < 21).then(pl.lit(" day")).when(d < 84).then(pl.lit(" week"))
    unit = unit.when(d < 700).then(pl.lit(" month")).otherwise(pl.lit(" year"))
    plural = pl.when(n == 1).then(pl.lit("")).otherwise(pl.lit("s"))
    return pl.concat_str(pl.max_horizontal(n, pl.lit(1)).cast(pl.String), unit, plural)


@dataclass
class _Rows:
    """One row per (customer, run time) to judge: what the rules need, as arrays (both paths build these)."""

    ids: pl.Series  # customer ids, indexed by ``cust``
    cust: np.ndarray
    ts: np.ndarray  # run time, epoch microseconds UTC
    n_days: np.ndarray
    last_day: np.ndarray  # epoch days
    days_since: np.ndarray
    median_gap: np.ndarray
    max_gap: np.ndarray
    mean_gap: np.ndarray
    sd_gap: np.ndarray
    recency_days: np.ndarray  # first to last event day
    age_days: np.ndarray  # first event day to the run's day
    model: np.ndarray  # index into the models list, -1: none

    def take(self, keep: np.ndarray) -> _Rows:
        return _Rows(self.ids, *(getattr(self, f.name)[keep] for f in fields(self)[1:]))


def _epoch_days(day: pl.Series) -> np.ndarray:
    return day.cast(pl.Date).cast(pl.Int32).to_numpy().astype(np.int64)


def _epoch_us(ts: pl.Series) -> np.ndarray:
    return ts.cast(pl.Datetime("us", "UTC")).cast(pl.Int64).to_numpy()


class CadenceTripWire:
    """Lapses in a customer's purchase / visit rhythm (BG/NBD or interval rule) and their contact rhythm."""

    name: ClassVar[str] = "cadence"
    kinds: ClassVar[tuple[str, ...]] = ("purchase", "contact")

    def __init__(self, **overrides: Any) -> None:
        self.params = params_with(CadenceParams, "cadence", overrides)

    def history(self) -> dict[str, timedelta | None]:
        """Everything of both kinds: the population BG/NBD fit and the pooled gap shape use every customer's
        whole purchase history, a customer's rhythm is their last ``max_gaps`` gaps however long ago, and the
        contact rhythm is read from ``contact_lookback_days`` before the last contact, however long ago that
        was (counts and "since the last event", not time spans before ``as_of``).

        >>> CadenceTripWire().history()
        {'purchase': None, 'contact': None}
        """
        return {"purchase": None, "contact": None}

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        as_of = utc(as_of)
        parts = []
        purchases = frames.get("purchase")
        if purchases is not None and purchases.height:
            purchases = point_in_time(purchases, as_of)
            for event_type in self.params.event_types:
                subset = purchases.filter(pl.col("event_type") == event_type)
                if subset.height:
                    parts.append(self._lapses(subset, event_type, as_of, context.get("bgnbd")))
        contacts = frames.get("contact")
        if contacts is not None and contacts.height:
            parts.append(self._contact_quiet(point_in_time(contacts, as_of), as_of))
        return _combine(parts)

    def score_history(
        self,
        frames: Mapping[str, pl.DataFrame],
        *,
        runs: Sequence[datetime] | None = None,
        **context: Any,
    ) -> pl.DataFrame:
        """Every run time's findings in one vectorised pass: ``detect`` at each run, concatenated.

        ``runs`` (default: one a day at 09:00 UTC over the data's span, see :func:`forewarn.detect.history.daily_runs`) are the
        run times. A customer's rhythm only changes on a day they have an event, so their statistics are
        computed once per event day and carried to every run until the next one; only the silence and the
        age grow. Population BG/NBD parameters: context ``bgnbd`` when given (as for ``detect``), else
        refitted every ``refit_days`` days from the first run on the events known at that refit
        (point-in-time), see :meth:`history_models`. ``detect(frames, t, bgnbd=<those models at t>)`` gives
        the same findings as this at run ``t``.

        >>> from datetime import UTC
        >>> t0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
        >>> visits = pl.DataFrame({"customer_id": ["c1"] * 4, "event_type": ["visit"] * 4,
        ...                        "ts": [t0 + timedelta(days=90 * i) for i in range(4)]})
        >>> runs = [t0 + timedelta(days=270 + d) for d in (150, 200, 201)]
        >>> out = CadenceTripWire().score_history({"purchase": visits}, runs=runs)
        >>> [(r["ts"].date().isoformat(), r["condition"]) for r in out.iter_rows(named=True)]
        [('2027-04-16', 'cadence:lapse:visit'), ('2027-04-17', 'cadence:lapse:visit')]
        """
        if runs is None:
            runs = daily_runs(frames, ("purchase", "contact"))
        runs = sorted(utc(r) for r in runs)
        if not runs:
            return empty_findings()
        run_us = np.array([int(r.timestamp() * 1_000_000) for r in runs], dtype=np.int64)
        run_day = np.array([r.date().toordinal() - _EPOCH_ORDINAL for r in runs], dtype=np.int64)
        p = self.params
        parts = []
        purchases = frames.get("purchase")
        if purchases is not None and purchases.height:
            given = context.get("bgnbd")
            for event_type in p.event_types:
                subset = purchases.filter(pl.col("event_type") == event_type)
                if subset.height == 0:
                    continue
                fixed, model = self._given(given, event_type)
                schedule = [(runs[0], model)] if fixed else self.history_models(subset, runs)
                models = [m for _, m in schedule]
                least = min(p.min_events, p.min_events_rhythm)
                rows = _history_rows(subset, run_us, run_day, p.max_gaps, least, None)
                at = np.array([int(t.timestamp() * 1_000_000) for t, _ in schedule], dtype=np.int64)
                which = np.searchsorted(at, rows.ts, side="right") - 1
                rows.model = np.where(np.array([m is not None for m in models])[which], which, -1)
                parts.append(self._judge_lapses(rows, models, event_type))
        contacts = frames.get("contact")
        if contacts is not None and contacts.height:
            rows = _history_rows(
                contacts, run_us, run_day, p.max_gaps, p.contact_min_events, p.contact_lookback_days
            )
            parts.append(self._judge_quiet(rows))
        return _combine(parts)

    # -- purchases / visits ------------------------------------------------------------------------------

    def history_models(
        self, events: pl.DataFrame, runs: Sequence[datetime]
    ) -> list[tuple[datetime, bgnbd.BGNBDParams | None]]:
        """The BG/NBD refits ``score_history`` uses for one event type: (refit time, model or None).

        A refit at the first run and then at the first run at least ``refit_days`` after the previous one
        (at every run while there is no BG/NBD fit or pooled gap shape yet: early on, a few days' more data
        decide whether there is a population at all), each on the events up to its own time only; a run uses the latest refit at
        or before it.
        """
        out: list[tuple[datetime, bgnbd.BGNBDParams | None]] = []
        for run in sorted(utc(r) for r in runs):
            last = out[-1][1] if out else None
            settled = last is not None and last.fitted and math.isfinite(last.gap_shape)
            if settled and run - out[-1][0] < timedelta(days=self.params.refit_days):
                continue
            out.append((run, self.model_for(events, run)))
        return out

    def model_for(
        self, events: pl.DataFrame, as_of: datetime, event_type: str = "purchase"
    ) -> bgnbd.BGNBDParams | None:
        """The population BG/NBD fitted on (a deterministic sample of) ``events`` up to ``as_of``, or None;
        with the pooled gap shape of those customers (``gap_shape``, see :func:`pooled_gap_shape`)."""
        p = self.params
        known = point_in_time(events, utc(as_of))
        days = known.select("customer_id", pl.col("ts").dt.date().alias("day")).unique()
        shape = pooled_gap_shape(days, p.max_gaps, min_customers=p.shape_min_customers)
        model = self._fit(bgnbd.summarize(known, utc(as_of), unit_days=p.unit_days))
        if model is None:
            if not math.isfinite(shape):
                return None
            model = bgnbd.BGNBDParams.shape_only(shape, p.unit_days)
        if not math.isfinite(shape):
            return replace(model, gap_shape=shape)
        stats = interval_stats(days, utc(as_of).date(), p.max_gaps, None).filter(
            pl.col("n_days") >= min(p.min_events, p.min_events_rhythm), pl.col("median_gap") >= 1
        )
        n_gaps = (stats["n_days"] - 1).cast(pl.Float64).to_numpy()
        mean_gap = stats["mean_gap"].to_numpy()
        n = stats.height
        p_gap, _ = silence_survival(
            stats["days_since"].cast(pl.Float64).to_numpy(),
            mean_gap,
            stats["sd_gap"].to_numpy(),
            n_gaps,
            np.full(n, shape),
            p,
        )
        rate = estimated_lapse_rate(p_gap, float(n_gaps.sum()), p.lapse_prior, p.lapse_prior_gaps)
        return replace(model, gap_shape=shape, lapse_rate=rate)

    def _fit(self, summary: pl.DataFrame) -> bgnbd.BGNBDParams | None:
        p = self.params
        if summary.height < p.min_fit_customers or summary["frequency"].sum() == 0:
            return None
        if summary.height > p.fit_sample:
            summary = summary.sort(pl.col("customer_id").hash(seed=7)).head(p.fit_sample)
        try:
            return bgnbd.fit(
                summary["frequency"].to_numpy(),
                summary["recency"].to_numpy(),
                summary["T"].to_numpy(),
                unit_days=p.unit_days,
            )
        except ValueError:
            return None

    @staticmethod
    def _given(given: Any, event_type: str) -> tuple[bool, bgnbd.BGNBDParams | None]:
        """(was a model given for this event type, the model). A mapping entry of None means "no model"."""
        if isinstance(given, Mapping) and not {"r", "alpha", "a", "b"} <= set(given):
            if event_type not in given:
                return False, None
            given = given[event_type]
            if given is None:
                return True, None
        if given is None:
            return False, None
        if isinstance(given, Mapping):
            given = bgnbd.BGNBDParams(**given)
        return True, given

    def _lapses(self, events: pl.DataFrame, event_type: str, as_of: datetime, given: Any) -> pl.DataFrame:
        p = self.params
        fixed, model = self._given(given, event_type)
        if not fixed:
            model = self.model_for(events, as_of)
        days = events.select("customer_id", pl.col("ts").dt.date().alias("day")).unique()
        stats = interval_stats(days, as_of.date(), p.max_gaps, None)
        least = min(p.min_events, p.min_events_rhythm)
        stats = stats.filter(pl.col("n_days") >= least, pl.col("median_gap") >= 1)
        first = days.group_by("customer_id").agg(pl.col("day").min().alias("first_day"))
        rows = _rows_from_stats(stats.join(first, on="customer_id"), as_of)
        rows.model = np.full(len(rows.cust), 0 if model is not None else -1)
        return self._judge_lapses(rows, [model], event_type)

    def _judge_lapses(
        self, rows: _Rows, models: Sequence[bgnbd.BGNBDParams | None], event_type: str
    ) -> pl.DataFrame:
        """The lapse rules on every row (both paths): BG/NBD P(alive), the rhythm and the interval rule."""
        p = self.params
        shaped = np.array([m is not None and math.isfinite(m.gap_shape) and m.gap_shape > 0 for m in models])
        rows = rows.take((rows.n_days >= p.min_events) | (np.append(shaped, False)[rows.model]))
        n = len(rows.cust)
        if n == 0:
            return empty_findings()
        fitted = np.array([m is not None and m.fitted for m in models] + [False])  # [-1]: no model
        has_model = fitted[rows.model]
        unit = np.full(n, p.unit_days)
        for i, m in enumerate(models):
            if m is not None:
                unit[rows.model == i] = m.unit_days
        x = (rows.n_days - 1).astype(np.float64)
        t_x, T = rows.recency_days / unit, rows.age_days / unit
        alive = np.full(n, np.nan)
        for i, m in enumerate(models):
            sel = rows.model == i
            if m is not None and m.fitted and sel.any():
                alive[sel] = bgnbd.p_alive(m, x[sel], t_x[sel], T[sel])
        use_model = has_model & (x >= p.bgnbd_min_repeat)
        overdue = rows.days_since > p.overdue_factor * rows.median_gap
        by_bgnbd = use_model & (alive < p.p_alive_threshold)
        # How unusual is a gap this long for this customer's own rhythm: gaps as a gamma with their mean and
        # spread (shape 1 = as irregular as Poisson buying, capped at 50 = clockwork). Only where it can
        # matter (overdue, or firing anyway and shown in the evidence).
        judge = overdue | by_bgnbd
        rows, x, alive, use_model, overdue, by_bgnbd, unit = (
            a.take(judge) if isinstance(a, _Rows) else a[judge]
            for a in (rows, x, alive, use_model, overdue, by_bgnbd, unit)
        )
        prior_shape = np.full(len(rows.cust), np.nan)
        lapse_rate = np.full(len(rows.cust), p.lapse_prior)
        for i, m in enumerate(models):
            if m is not None and math.isfinite(m.gap_shape) and m.gap_shape > 0:
                prior_shape[rows.model == i] = m.gap_shape
            if m is not None and math.isfinite(m.lapse_rate):
                lapse_rate[rows.model == i] = m.lapse_rate
        p_gap, shape = silence_survival(
            rows.days_since, rows.mean_gap, rows.sd_gap, rows.n_days - 1, prior_shape, p
        )
        # BG/NBD assumes Poisson (irregular) buying, so it is slow to doubt a customer with a steady rhythm;
        # for those, a silence their own gap distribution makes very unlikely is telling. How unlikely is
        # enough depends on how often customers really stop: a fixed ``rhythm_alpha`` makes ~alpha of all
        # ordinary gaps alarms whatever the base rate (at 1 lapse in 200 gaps, 0.5% is one false message per
        # true one). With the population prior, the silence is weighed against the odds of a lapse per gap
        # (the population's, estimated with the model, see :func:`estimated_lapse_rate`; else
        # ``lapse_prior``) into a P(alive), judged by the same ``p_alive_threshold`` as BG/NBD.
        bayes = np.isfinite(prior_shape)
        drop = lapse_rate
        with np.errstate(invalid="ignore", divide="ignore"):
            alive_rhythm = (1 - drop) * p_gap / ((1 - drop) * p_gap + drop)
        alive_rhythm = np.where(bayes, alive_rhythm, np.nan)
        rhythm = overdue & np.where(bayes, alive_rhythm < p.p_alive_threshold, p_gap < p.rhythm_alpha)
        rule = np.where(
            by_bgnbd,
            "bgnbd",
            np.where(rhythm & (use_model | bayes), "rhythm", np.where(rhythm, "interval", "")),
        )
        fired = rule != ""
        rows, x, alive, use_model, p_gap, rule, unit, alive_rhythm, shape = (
            a.take(fired) if isinstance(a, _Rows) else a[fired]
            for a in (rows, x, alive, use_model, p_gap, rule, unit, alive_rhythm, shape)
        )
        expected = np.full(len(x), np.nan)
        for i, m in enumerate(models):
            sel = rows.model == i
            if m is not None and m.fitted and sel.any():
                horizon = p.expect_horizon_days / m.unit_days
                expected[sel] = bgnbd.conditional_expected_purchases(
                    m, horizon, x[sel], rows.recency_days[sel] / unit[sel], rows.age_days[sel] / unit[sel]
                )
        confidence = np.where(
            rule == "bgnbd",
            1.0 - alive,
            np.where(np.isfinite(alive_rhythm), 1.0 - alive_rhythm, _confidence_from_gaps(rows.n_days - 1.0)),
        )
        extra = {
            "rule": rule,
            "confidence": confidence,
            "p_gap": p_gap,
            "p_alive": alive,
            "p_alive_rhythm": alive_rhythm,
            "gap_shape": shape,  # the customer's gap regularity as judged (shown with the rhythm's P(alive))
            "expected_next": expected,
            "by_model": use_model,
        }
        return self._findings(rows, extra, "lapse", event_type, models)

    # -- contacts ------------------------------------------------------------------------------------------

    def _contact_quiet(self, contacts: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
        p = self.params
        days = contacts.select("customer_id", pl.col("ts").dt.date().alias("day")).unique()
        stats = interval_stats(days, as_of.date(), p.max_gaps, p.contact_lookback_days)
        stats = stats.filter(pl.col("n_days") >= p.contact_min_events, pl.col("median_gap") >= 1)
        rows = _rows_from_stats(stats.with_columns(first_day=pl.col("last_day")), as_of)
        return self._judge_quiet(rows)

    def _judge_quiet(self, rows: _Rows) -> pl.DataFrame:
        p = self.params
        rows = rows.take(rows.days_since > p.contact_overdue_factor * rows.median_gap)
        n = len(rows.cust)
        if n == 0:
            return empty_findings()
        nan = np.full(n, np.nan)
        extra = {
            "rule": np.full(n, "interval"),
            "confidence": _confidence_from_gaps(rows.n_days - 1.0),
            "p_gap": nan,
            "p_alive": nan,
            "p_alive_rhythm": nan,
            "gap_shape": nan,
            "expected_next": nan,
            "by_model": np.zeros(n, dtype=bool),
        }
        return self._findings(rows, extra, "quiet", "contact", [])

    # -- findings ------------------------------------------------------------------------------------------

    def _findings(
        self,
        rows: _Rows,
        extra: Mapping[str, np.ndarray],
        what: str,
        event_type: str,
        models: Sequence[bgnbd.BGNBDParams | None],
    ) -> pl.DataFrame:
        """Findings for judged rows, built column-wise (evidence is JSON with sorted keys)."""
        if len(rows.cust) == 0:
            return empty_findings()
        noun, verb = EVENT_WORDS.get(event_type, (event_type, event_type))
        frame = pl.DataFrame(
            {
                "customer_id": rows.ids.gather(rows.cust),
                "ts": pl.Series(rows.ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "n_days": rows.n_days.astype(np.int64),
                "last_day": pl.Series(rows.last_day.astype(np.int32)).cast(pl.Date),
                "days_since": rows.days_since.astype(np.int64),
                "median_gap": rows.median_gap.astype(np.float64),
                "max_gap": rows.max_gap.astype(np.float64),
                "score": (rows.days_since / rows.median_gap).astype(np.float64),
                "model": rows.model.astype(np.int64),
                **{k: v for k, v in extra.items()},
            }
        ).with_columns(pl.col("p_gap", "p_alive", "p_alive_rhythm", "expected_next").fill_nan(None))
        horizon_key = f"expected_next_{self.params.expect_horizon_days}d"
        base = {
            "event_type": pl.lit(event_type),
            "rule": pl.col("rule"),
            "event_days": pl.col("n_days"),
            "last_event": pl.col("last_day").cast(pl.String),
            "days_since_last": pl.col("days_since"),
            "median_gap_days": pl.col("median_gap"),
            "longest_gap_days": pl.col("max_gap"),
            "overdue_factor": pl.col("score").round(3),
        }
        known = [(i, m) for i, m in enumerate(models) if m is not None and m.fitted]
        if known:
            coefs = pl.DataFrame(
                {
                    "model": [i for i, _ in known],
                    **{
                        k: [round(float(getattr(m, k)), 6) for _, m in known]
                        for k in ("a", "alpha", "b", "log_likelihood", "r", "unit_days")
                    },
                }
            ).with_columns(pl.col(pl.Float64).fill_nan(None))
            frame = frame.join(coefs, on="model", how="left")
        parts = []
        flags = [
            pl.col("p_gap").is_not_null().alias("f_gap"),
            pl.col("p_alive").is_not_null().alias("f_alive"),
            pl.col("p_alive_rhythm").is_not_null().alias("f_rhythm"),
            (pl.col("by_model") & (pl.col("model") >= 0)).alias("f_model"),
        ]
        frame = frame.with_columns(flags)
        for (f_gap, f_alive, f_rhythm, f_model), part in frame.group_by(
            "f_gap", "f_alive", "f_rhythm", "f_model", maintain_order=True
        ):
            keys = dict(base)
            if f_gap:
                keys["p_gap_this_long"] = pl.col("p_gap").round_sig_figs(3)
            if f_alive:
                keys["p_alive"] = pl.col("p_alive").round(4)
                keys[horizon_key] = pl.col("expected_next").round(3)
            if f_rhythm:  # the rhythm's own P(alive) (gap distribution and lapse_prior), and its shape
                keys["p_alive_rhythm"] = pl.col("p_alive_rhythm").round_sig_figs(3)
                keys["gap_shape"] = pl.col("gap_shape").round(3)
            if f_model:
                keys["bgnbd"] = pl.struct(
                    [pl.col(k) for k in ("a", "alpha", "b", "log_likelihood", "r", "unit_days")]
                )
            ordered = [keys[k].alias(k) for k in sorted(keys)]
            parts.append(part.with_columns(evidence=pl.struct(ordered).struct.json_encode()))
        frame = pl.concat(parts)
        since, gap = humanize_expr(pl.col("days_since")), humanize_expr(pl.col("median_gap"))
        if event_type == "contact":
            text = pl.concat_str(
                pl.lit("We have not heard from you in "),
                since,
                pl.lit("; you usually get in touch about every "),
                gap,
                pl.lit("."),
            )
        else:
            text = pl.concat_str(
                pl.lit("It has been "),
                since,
                pl.lit(f" since your last {noun}; you usually {verb} about every "),
                gap,
                pl.lit("."),
            )
        return as_findings(
            frame.with_columns(
                kind=pl.lit(self.name),
                condition=pl.lit(f"cadence:{what}:{event_type}"),
                severity=pl.lit("info"),
                topic=pl.lit("account"),
                explanation=text,
            )
        )


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _combine(parts: list[pl.DataFrame]) -> pl.DataFrame:
    # A stable order (by time, condition, customer) whichever way the rows were computed.
    parts = [p for p in parts if p.height]
    return pl.concat(parts).sort("ts", "condition", "customer_id") if parts else empty_findings()


def _rows_from_stats(stats: pl.DataFrame, as_of: datetime) -> _Rows:
    """``detect``'s per-customer statistics (interval_stats plus first_day) as rows to judge at ``as_of``."""
    n = stats.height
    last, first = _epoch_days(stats["last_day"]), _epoch_days(stats["first_day"])
    today = as_of.date().toordinal() - _EPOCH_ORDINAL
    f64 = lambda c: stats[c].cast(pl.Float64).to_numpy()  # noqa: E731
    return _Rows(
        ids=stats["customer_id"],
        cust=np.arange(n),
        ts=np.full(n, int(as_of.timestamp() * 1_000_000), dtype=np.int64),
        n_days=stats["n_days"].cast(pl.Int64).to_numpy(),
        last_day=last,
        days_since=today - last,
        median_gap=f64("median_gap"),
        max_gap=f64("max_gap"),
        mean_gap=f64("mean_gap"),
        sd_gap=f64("sd_gap"),
        recency_days=(last - first).astype(np.float64),
        age_days=(today - first).astype(np.float64),
        model=np.full(n, -1),
    )


def _history_rows(
    events: pl.DataFrame,
    run_us: np.ndarray,
    run_day: np.ndarray,
    max_gaps: int,
    min_days: int,
    lookback_days: int | None,
) -> _Rows:
    """Every (customer, run) whose statistics at that run pass ``min_days`` and a median gap of a day or more.

    One state per (customer, event day), effective from the day's first event time until the next day's: its
    statistics as :func:`interval_stats` computes them at any run in that span (trailing ``max_gaps`` gaps,
    within ``lookback_days`` of that day when given); then each state is repeated over its runs.
    """
    table = (
        events.lazy()
        .select("customer_id", pl.col("ts").cast(pl.Datetime("us", "UTC")))
        .group_by("customer_id", pl.col("ts").dt.date().alias("day"))
        .agg(pl.col("ts").min().alias("at"))
        .sort("customer_id", "day")
        .collect()
    )
    ids = table["customer_id"]
    s = table.height
    idx = np.arange(s)
    new = np.ones(s, dtype=bool)
    new[1:] = (ids[1:] != ids[:-1]).to_numpy()
    start = np.maximum.accumulate(np.where(new, idx, 0))
    day, at = _epoch_days(table["day"]), _epoch_us(table["at"])
    gap = np.empty(s)
    gap[0] = np.nan
    gap[1:] = day[1:] - day[:-1]
    gap[new] = np.nan
    if lookback_days is None:
        first = start
    else:
        key = np.cumsum(new) * 1_000_000 + day  # sorted by (customer, day)
        first = np.searchsorted(key, key - lookback_days, side="left")
    n_days = idx - first + 1
    keep = np.flatnonzero(n_days >= min_days)
    # The trailing gaps of each state: gap j (day j-1 to day j) counts when day j-1 is in the window.
    mat = np.full((keep.size, max_gaps), np.nan)
    for o in range(max_gaps):
        j = keep - o
        ok = j > first[keep]
        mat[ok, o] = gap[j[ok]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(mat, axis=1)
        ok = median >= 1
        keep, mat, median = keep[ok], mat[ok], median[ok]
        longest = np.nanmax(mat, axis=1)
        mean = np.nanmean(mat, axis=1)
        sd = np.nanstd(mat, axis=1, ddof=1)
    # Runs each state is in force for: from its day's first event to the next day's first event.
    nxt = np.full(s, np.iinfo(np.int64).max)
    nxt[:-1] = np.where(new[1:], nxt[:-1], at[1:])
    lo = np.searchsorted(run_us, at[keep], side="left")
    hi = np.searchsorted(run_us, nxt[keep], side="left")
    count = hi - lo
    state = np.repeat(np.arange(keep.size), count)
    offsets = np.cumsum(count) - count
    run = np.arange(state.size) - np.repeat(offsets, count) + np.repeat(lo, count)
    k = keep[state]
    return _Rows(
        ids=ids,
        cust=k,
        ts=run_us[run],
        n_days=n_days[k],
        last_day=day[k],
        days_since=run_day[run] - day[k],
        median_gap=median[state],
        max_gap=longest[state],
        mean_gap=mean[state],
        sd_gap=sd[state],
        recency_days=(day[k] - day[start[k]]).astype(np.float64),
        age_days=(run_day[run] - day[start[k]]).astype(np.float64),
        model=np.full(state.size, -1),
    )
