"""The cadence trip wire: a customer who has broken their own rhythm of buying, visiting or getting in touch.

Three conditions, each judged against the customer's own history (same-day events merged, UTC days):

- ``cadence:lapse:<event_type>`` (kind ``purchase``; event types ``purchase`` and ``visit`` each have their
  own rhythm), for customers with enough history (``bgnbd_min_repeat`` repeat days) and a population BG/NBD
  model: P(alive) below ``p_alive_threshold``. The population parameters come from context ``bgnbd`` (a
  :class:`~forewarn.detect.bgnbd.BGNBDParams`, or a dict of them by event type, fitted once and broadcast to
  every bucket) or are fitted here on (a deterministic sample of) the customers in the frame, using rows up to
  ``as_of`` only.
  For them a silence over ``overdue_factor`` x their median gap that their own gap distribution (a gamma
  with the mean and spread of their last ``max_gaps`` gaps) puts below ``rhythm_alpha`` fires too (rule
  ``rhythm``): BG/NBD assumes irregular, Poisson-like buying and is slow to doubt a steady customer.
- the same condition for customers with fewer events (at least ``min_events`` days), or when no model can be
  fitted: the interval rule, overdue by ``overdue_factor`` x the customer's own median gap ("came every 3
  months, not in 6") and a gap that long below ``rhythm_alpha`` under their gap distribution (its shape
  capped at 8 there: a few gaps say little about the spread).
- ``cadence:quiet:contact`` (kind ``contact``): a customer who usually gets in touch regularly
  (``contact_min_events`` contact days within ``contact_lookback_days`` before their last one) has been quiet
  for ``contact_overdue_factor`` x their median gap.

Context used: ``bgnbd`` (optional, see above). Findings are severity ``info``, topic ``account``.

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

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.stats import gamma

from forewarn.detect import bgnbd
from forewarn.detect.base import Params, as_findings, empty_findings, point_in_time

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
    # Interval rule: overdue when the silence exceeds this x the median gap. For fairly regular gaps
    # (gamma-like, CV 0.5) a gap over 2x the median is a ~5% event; over 1.5x it is ~20%, too many alarms.
    overdue_factor: float = 2.0
    max_gaps: int = 12  # the median gap is over the customer's last this many gaps (rhythms change)
    bgnbd_min_repeat: int = 5  # repeat days from which BG/NBD P(alive) decides instead of the interval rule
    p_alive_threshold: float = 0.3  # BG/NBD: lapsed when P(alive) is below this
    rhythm_alpha: float = 0.005  # steady rhythm: lapsed when a gap this long has at most this probability
    unit_days: float = 7.0  # BG/NBD time unit (weeks, as in the literature); P(alive) does not depend on it
    min_fit_customers: int = 200  # fewer customers than this: no BG/NBD fit here (interval rule only)
    fit_sample: int = 20_000  # at most this many customers (a deterministic sample) for the fit
    expect_horizon_days: int = 30  # evidence: purchases expected in the next this many days
    contact_min_events: int = 4  # contact days (within the lookback) before "usually gets in touch" is known
    contact_overdue_factor: float = 2.0
    contact_lookback_days: int = 365  # the contact rhythm is read from this many days before the last contact


def _utc(as_of: datetime) -> datetime:
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


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


def _confidence_from_gaps(n_gaps: pl.Expr) -> pl.Expr:
    # More gaps seen, more sure of the rhythm: 2 gaps -> 0.5, 6 -> 0.75, 12 -> 0.86.
    return (n_gaps / (n_gaps + 2.0)).clip(0.0, 1.0)


class CadenceTripWire:
    """Lapses in a customer's purchase / visit rhythm (BG/NBD or interval rule) and their contact rhythm."""

    name: ClassVar[str] = "cadence"
    kinds: ClassVar[tuple[str, ...]] = ("purchase", "contact")

    def __init__(self, **overrides: Any) -> None:
        known = {f.name for f in fields(CadenceParams)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(
                f"cadence trip wire: unknown parameter(s) {sorted(unknown)}; expected {sorted(known)}"
            )
        self.params = replace(CadenceParams(), **overrides)

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        as_of = _utc(as_of)
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
        parts = [p for p in parts if p.height]
        return pl.concat(parts) if parts else empty_findings()

    # -- purchases / visits ------------------------------------------------------------------------------

    def model_for(
        self, events: pl.DataFrame, as_of: datetime, event_type: str = "purchase"
    ) -> bgnbd.BGNBDParams | None:
        """The population BG/NBD fitted on (a deterministic sample of) ``events`` up to ``as_of``, or None."""
        return self._fit(bgnbd.summarize(events, _utc(as_of), unit_days=self.params.unit_days))

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

    def _lapses(self, events: pl.DataFrame, event_type: str, as_of: datetime, given: Any) -> pl.DataFrame:
        p = self.params
        model = given.get(event_type) if isinstance(given, Mapping) else given
        if isinstance(model, Mapping):
            model = bgnbd.BGNBDParams(**model)
        summary = bgnbd.summarize(events, as_of, unit_days=model.unit_days if model else p.unit_days)
        if model is None:
            model = self._fit(summary)
        days = events.select("customer_id", pl.col("ts").dt.date().alias("day")).unique()
        stats = interval_stats(days, as_of.date(), p.max_gaps, None).join(
            summary.select("customer_id", "frequency", "recency", "T"), on="customer_id"
        )
        stats = stats.filter(pl.col("n_days") >= p.min_events, pl.col("median_gap") >= 1)
        if stats.height == 0:
            return empty_findings()
        x, t_x, T = (stats[c].to_numpy() for c in ("frequency", "recency", "T"))
        if model is not None:
            alive = bgnbd.p_alive(model, x, t_x, T)
            horizon = p.expect_horizon_days / model.unit_days
            expected = bgnbd.conditional_expected_purchases(model, horizon, x, t_x, T)
        else:
            alive = np.full(stats.height, np.nan)
            expected = np.full(stats.height, np.nan)
        use_model = (model is not None) & (x >= p.bgnbd_min_repeat)
        # How unusual is a gap this long for this customer's own rhythm: gaps as a gamma with their mean and
        # spread (shape 1 = as irregular as Poisson buying, capped at 50 = clockwork).
        mean, sd = stats["mean_gap"].to_numpy(), stats["sd_gap"].fill_null(0.0).to_numpy()
        # Few gaps say little about the spread: cap the shape lower there (a wider, more forgiving rhythm).
        cap = np.where(stats["n_days"].to_numpy() - 1 >= p.bgnbd_min_repeat, 50.0, 8.0)
        shape = np.clip(mean**2 / np.maximum(sd**2, 1e-9), 1.0, cap)
        p_gap = gamma.sf(stats["days_since"].to_numpy(), shape, scale=mean / shape)
        stats = stats.with_columns(
            pl.Series("p_alive", alive),
            pl.Series("expected_next", expected),
            pl.Series("by_model", use_model),
            pl.Series("p_gap", p_gap),
            (pl.col("days_since") / pl.col("median_gap")).alias("score"),
        )
        overdue = pl.col("days_since") > p.overdue_factor * pl.col("median_gap")
        # BG/NBD assumes Poisson (irregular) buying, so it is slow to doubt a customer with a steady rhythm;
        # for those, a silence their own gap distribution makes very unlikely is telling.
        rule = (
            pl.when(pl.col("by_model") & (pl.col("p_alive") < p.p_alive_threshold))
            .then(pl.lit("bgnbd"))
            .when(pl.col("by_model") & overdue & (pl.col("p_gap") < p.rhythm_alpha))
            .then(pl.lit("rhythm"))
            .when(~pl.col("by_model") & overdue & (pl.col("p_gap") < p.rhythm_alpha))
            .then(pl.lit("interval"))
        )
        fired = stats.with_columns(rule.alias("rule")).filter(pl.col("rule").is_not_null())
        confidence = (
            pl.when(pl.col("rule") == "bgnbd")
            .then(1.0 - pl.col("p_alive"))
            .otherwise(_confidence_from_gaps(pl.col("n_days") - 1.0))
        )
        fired = fired.with_columns(confidence.alias("confidence"))
        return self._findings(fired, "lapse", event_type, as_of, model)

    # -- contacts ------------------------------------------------------------------------------------------

    def _contact_quiet(self, contacts: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
        p = self.params
        days = contacts.select("customer_id", pl.col("ts").dt.date().alias("day")).unique()
        stats = interval_stats(days, as_of.date(), p.max_gaps, p.contact_lookback_days)
        fired = stats.filter(
            pl.col("n_days") >= p.contact_min_events,
            pl.col("median_gap") >= 1,
            pl.col("days_since") > p.contact_overdue_factor * pl.col("median_gap"),
        ).with_columns(
            (pl.col("days_since") / pl.col("median_gap")).alias("score"),
            _confidence_from_gaps(pl.col("n_days") - 1.0).alias("confidence"),
            pl.lit(False).alias("by_model"),
            pl.lit("interval").alias("rule"),
            pl.lit(None, dtype=pl.Float64).alias("p_alive"),
            pl.lit(None, dtype=pl.Float64).alias("expected_next"),
        )
        return self._findings(fired, "quiet", "contact", as_of, None)

    def _findings(
        self,
        fired: pl.DataFrame,
        what: str,
        event_type: str,
        as_of: datetime,
        model: bgnbd.BGNBDParams | None,
    ) -> pl.DataFrame:
        if fired.height == 0:
            return empty_findings()
        noun, verb = EVENT_WORDS.get(event_type, (event_type, event_type))
        rows = []
        for r in fired.iter_rows(named=True):
            since, gap = humanize_days(r["days_since"]), humanize_days(r["median_gap"])
            evidence: dict[str, Any] = {
                "event_type": event_type,
                "rule": r["rule"],
                "event_days": r["n_days"],
                "last_event": r["last_day"].isoformat(),
                "days_since_last": r["days_since"],
                "median_gap_days": r["median_gap"],
                "longest_gap_days": r["max_gap"],
                "overdue_factor": round(r["score"], 3),
            }
            if r.get("p_gap") is not None:
                evidence["p_gap_this_long"] = float(f"{r['p_gap']:.3g}")
            if r["p_alive"] is not None and not np.isnan(r["p_alive"]):
                evidence["p_alive"] = round(r["p_alive"], 4)
                evidence[f"expected_next_{self.params.expect_horizon_days}d"] = round(r["expected_next"], 3)
            if r["by_model"] and model is not None:
                evidence["bgnbd"] = {
                    k: round(v, 6) for k, v in model.as_dict().items() if isinstance(v, float)
                }
            if event_type == "contact":
                text = f"We have not heard from you in {since}; you usually get in touch about every {gap}."
            else:
                text = f"It has been {since} since your last {noun}; you usually {verb} about every {gap}."
            rows.append(
                {
                    "customer_id": r["customer_id"],
                    "kind": self.name,
                    "condition": f"cadence:{what}:{event_type}",
                    "ts": as_of,
                    "score": float(r["score"]),
                    "confidence": float(r["confidence"]),
                    "severity": "info",
                    "topic": "account",
                    "explanation": text,
                    "evidence": json.dumps(evidence, sort_keys=True),
                }
            )
        return as_findings(pl.DataFrame(rows))
