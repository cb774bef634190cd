"""The opportunity trip wire: usage close to the plan's limit, stated as a suggestion, not an alarm.

For each customer with a data allowance (``plan_limit_gb`` in the customer's ``attributes``, see
:func:`plan_limits`), the usage of ``metric`` (kind ``usage``) is summed per billing period: from the
customer's ``billing_day`` attribute (1-31, clamped to the month's length) to the day before the next one;
calendar months when it is missing. Two conditions:

- ``opportunity:plan_limit:<metric>``: each of the last ``periods`` complete billing periods reached at least
  ``near_fraction`` of the allowance: a larger plan may suit the customer better (severity ``info``, topic
  ``offer``). Missing usage rows only lower a period's total, so gaps in data never create an offer.
- ``opportunity:approaching_limit:<metric>:<period start>``: the current period has already used
  ``approach_fraction`` of the allowance (the usual "80% used" notice), with the days left, so the customer
  can add data before extra charges or throttling (severity ``info``, topic ``usage``).

Context used: ``customers`` (``id`` or ``customer_id``; ``attributes`` as a JSON string or a struct with
``plan_limit_gb`` and optionally ``billing_day``; customers without a limit are skipped). A usage row's day
is the day its period ends (``usage_stamp``: a daily total stamped at the following midnight counts for the
day before).

>>> from datetime import datetime, timedelta, UTC
>>> days = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=i) for i in range(120)]
>>> usage = pl.DataFrame({"customer_id": ["c1"] * 120, "metric": ["data_gb"] * 120, "ts": days,
...                       "value": [1.6] * 120})
>>> customers = pl.DataFrame({"id": ["c1"], "attributes": ['{"plan_limit_gb": 50}']})
>>> as_of = datetime(2026, 4, 10, tzinfo=UTC)
>>> out = OpportunityTripWire().detect({"usage": usage}, as_of, customers=customers)
>>> for part in out.filter(pl.col("topic") == "offer")["explanation"][0].split("; "):
...     print(part)
Your data use has been close to your 50 GB monthly allowance for the last 3 months (49.6, 44.8 and 49.6 GB)
a plan with more data may suit you better.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from forewarn.detect.base import FINDINGS_SCHEMA, Params, as_findings, empty_findings, params_with
from forewarn.detect.history import TS, daily_runs
from forewarn.timeutil import utc


@dataclass(frozen=True)
class OpportunityParams(Params):
    """Parameters of the opportunity trip wire."""

    metric: str = "data_gb"  # the usage metric the allowance is for
    limit_attribute: str = "plan_limit_gb"  # customer attribute holding the allowance per billing period
    billing_day_attribute: str = "billing_day"  # customer attribute: day of month a period starts (else 1)
    unit: str = "GB"
    periods: int = 3  # complete billing periods in a row that must be near the limit
    near_fraction: float = 0.85  # "near": at least this fraction of the allowance
    approach_fraction: float = 0.8  # in the current period: tell the customer once this much is used
    usage_stamp: str = "end"  # a usage row's ts is the "end" of the period it measures (or its "start")


def usage_day(ts: pl.Expr, stamp: str = "end") -> pl.Expr:
    """The calendar day (UTC) a usage reading belongs to.

    With ``stamp="end"`` a reading stamped at the end of its period (a day's total at the next midnight)
    belongs to the day before that instant; ``"start"`` takes the day of ``ts``.

    >>> from datetime import datetime, UTC
    >>> f = pl.DataFrame({"ts": [datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 3, 12, tzinfo=UTC)]})
    >>> [str(d) for d in f.select(usage_day(pl.col("ts")))["ts"]]
    ['2026-03-02', '2026-03-03']
    """
    if stamp == "end":
        return (ts - pl.duration(microseconds=1)).dt.date()
    if stamp == "start":
        return ts.dt.date()
    raise ValueError(f"usage_stamp must be 'end' or 'start', got {stamp!r}")


def customer_number(customers: pl.DataFrame | None, attribute: str) -> pl.DataFrame:
    """(customer_id, value) for customers whose ``attributes`` (JSON or struct) hold a number ``attribute``.

    A top-level column named ``attribute`` also works. Customers without a number there are left out.

    >>> c = pl.DataFrame({"id": ["a", "b"], "attributes": ['{"billing_day": 14}', "{}"]})
    >>> customer_number(c, "billing_day").rows()
    [('a', 14.0)]
    """
    empty = pl.DataFrame(schema={"customer_id": pl.String(), "value": pl.Float64()})
    if customers is None or customers.height == 0:
        return empty
    id_col = "id" if "id" in customers.columns else "customer_id"
    if id_col not in customers.columns:
        raise ValueError("customers frame: expected an 'id' (or 'customer_id') column")
    if attribute in customers.columns:
        value = pl.col(attribute)
    elif "attributes" in customers.columns:
        dtype = customers.schema["attributes"]
        if dtype == pl.String():
            value = pl.col("attributes").str.json_path_match(f"$.{attribute}")
        elif isinstance(dtype, pl.Struct) and attribute in [f.name for f in dtype.fields]:
            value = pl.col("attributes").struct.field(attribute)
        else:
            return empty
    else:
        return empty
    return (
        customers.select(
            pl.col(id_col).cast(pl.String()).alias("customer_id"),
            value.cast(pl.Float64(), strict=False).alias("value"),
        )
        .drop_nulls("value")
        .unique("customer_id", keep="last")
    )


def plan_limits(customers: pl.DataFrame | None, attribute: str = "plan_limit_gb") -> pl.DataFrame:
    """(customer_id, plan_limit) for customers with a positive ``attribute`` (see :func:`customer_number`).

    >>> c = pl.DataFrame({"id": ["a", "b", "c"], "attributes": ['{"plan_limit_gb": 20}', "{}", None]})
    >>> plan_limits(c).rows()
    [('a', 20.0)]
    """
    return customer_number(customers, attribute).filter(pl.col("value") > 0).rename({"value": "plan_limit"})


def _on_day(month_start: pl.Expr, billing_day: pl.Expr) -> pl.Expr:
    """The billing day in the month starting at ``month_start``, clamped to the month's length."""
    last = month_start.dt.days_in_month().cast(pl.Int64)
    return pl.date(month_start.dt.year(), month_start.dt.month(), pl.min_horizontal(billing_day, last))


def period_index(day: pl.Expr, billing_day: pl.Expr) -> pl.Expr:
    """The billing period containing ``day``, as a month count (year * 12 + month - 1 of its start).

    Integer arithmetic only, so it is cheap on every usage row.

    >>> from datetime import date
    >>> f = pl.DataFrame({"d": [date(2026, 3, 5), date(2026, 3, 20), date(2026, 2, 28)], "bd": [14, 14, 31]})
    >>> f.select(period_index(pl.col("d"), pl.col("bd")) - 2026 * 12)["d"].to_list()  # Feb=1, Mar=2
    [1, 2, 1]
    """
    clamped = pl.min_horizontal(billing_day, day.dt.days_in_month().cast(pl.Int64))
    before = (day.dt.day().cast(pl.Int64) < clamped).cast(pl.Int64)
    return day.dt.year().cast(pl.Int64) * 12 + day.dt.month().cast(pl.Int64) - 1 - before


def period_start(index: pl.Expr, billing_day: pl.Expr) -> pl.Expr:
    """The first day of the billing period ``index`` (see :func:`period_index`)."""
    return _on_day(pl.date(index // 12, index % 12 + 1, 1), billing_day)


def _number(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.1f}"


class OpportunityTripWire:
    """Usage near the plan limit: suggest a better-fitting plan, or warn the allowance is nearly used."""

    name: ClassVar[str] = "opportunity"
    kinds: ClassVar[tuple[str, ...]] = ("usage",)

    def __init__(self, **overrides: Any) -> None:
        self.params = params_with(OpportunityParams, "opportunity", overrides)

    def history(self) -> dict[str, timedelta | None]:
        """Usage since 31 x (``periods`` + 1) days before ``as_of``: ``detect`` looks no further back (its
        pre-filter), and ``periods`` billing periods of at most 31 days plus the current one fit in that.

        >>> OpportunityTripWire().history()["usage"].days
        124
        """
        return {"usage": timedelta(days=31 * (self.params.periods + 1))}

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        p = self.params
        as_of = utc(as_of)
        usage = frames.get("usage")
        customers = context.get("customers")
        limits = plan_limits(customers, p.limit_attribute)
        if usage is None or usage.height == 0 or limits.height == 0:
            return empty_findings()
        limits = self._with_billing_day(customers, limits).with_columns(
            period_index(pl.lit(as_of.date()), pl.col("billing_day")).alias("current")
        )
        oldest = as_of - self.history()["usage"]  # cheap pre-filter before the join
        periods = (
            usage.lazy()
            .filter(pl.col("ts") <= as_of, pl.col("ts") >= oldest, pl.col("metric") == p.metric)
            .select("customer_id", usage_day(pl.col("ts"), p.usage_stamp).alias("day"), "value")
            .join(limits.lazy(), on="customer_id")
            .with_columns(period_index(pl.col("day"), pl.col("billing_day")).alias("period"))
            .filter(pl.col("period") >= pl.col("current") - p.periods)
            .group_by("customer_id", "period")
            .agg(
                # rounded: a parallel sum's last bits depend on chunking, findings must not
                pl.col("value").sum().round(6).alias("used"),
                pl.col("plan_limit").first(),
                pl.col("billing_day").first(),
                pl.col("current").first(),
            )
            .with_columns(
                (pl.col("used") / pl.col("plan_limit")).alias("fraction"),
                period_start(pl.col("period") + 1, pl.col("billing_day")).alias("next"),
                period_start(pl.col("period"), pl.col("billing_day")).alias("period"),
                period_start(pl.col("current"), pl.col("billing_day")).alias("current"),
            )
            .sort("customer_id", "period")
            .collect()
        )
        stamp = pl.lit(as_of).cast(pl.Datetime("us", "UTC")).alias("ts")
        complete = periods.filter(pl.col("period") < pl.col("current"))
        rows = self._plan_offers(self._near_periods(complete, ["customer_id"]).with_columns(stamp))
        rows += self._approaching(periods.filter(pl.col("period") == pl.col("current")).with_columns(stamp))
        if not rows:
            return empty_findings()
        return as_findings(pl.DataFrame(rows)).sort("customer_id", "condition")

    def score_history(
        self,
        frames: Mapping[str, pl.DataFrame],
        *,
        runs: Sequence[datetime] | None = None,
        **context: Any,
    ) -> pl.DataFrame:
        """``detect`` at every run (default: daily at 09:00 UTC over the usage's span), in one pass.

        Per customer and run: the current period's usage so far is a running total over the customer's usage
        rows (as-of joined at the run), and the complete periods before it are whole-period totals, so the
        plan offer only changes when a period ends and is worked out once per (customer, period).
        """
        p = self.params
        usage = frames.get("usage")
        customers = context.get("customers")
        limits = plan_limits(customers, p.limit_attribute)
        if usage is None or usage.height == 0 or limits.height == 0:
            return empty_findings()
        runs = sorted(utc(r) for r in runs) if runs is not None else daily_runs(frames, ["usage"])
        if not runs:
            return empty_findings()
        limits = self._with_billing_day(customers, limits)
        rows = (
            usage.lazy()
            .filter(pl.col("metric") == p.metric)
            .select("customer_id", pl.col("ts").cast(TS), "value")
            .join(limits.lazy(), on="customer_id")
            .with_columns(
                period_index(usage_day(pl.col("ts"), p.usage_stamp), pl.col("billing_day")).alias("p")
            )
            .group_by("customer_id", "p", "ts")
            .agg(pl.col("value").sum(), pl.col("plan_limit").first(), pl.col("billing_day").first())
            .sort("customer_id", "ts")
            .with_columns(
                pl.col("value").cum_sum().over("customer_id", "p").alias("so_far"),
                pl.col("ts").shift(-1).over("customer_id").alias("next_ts"),
            )
            .collect()
        )
        totals = rows.group_by("customer_id", "p").agg(pl.col("value").sum().round(6).alias("used"))
        # each run's current period per billing day (31 x runs rows, not customers x runs)
        at = pl.DataFrame({"run": np.arange(len(runs)), "ts": pl.Series(runs, dtype=TS)})
        current = (
            at.join(limits.select("billing_day").unique(), how="cross")
            .with_columns(period_index(pl.col("ts").dt.date(), pl.col("billing_day")).alias("c"))
            .drop("ts")
        )
        # the current period so far: each usage row's running total holds from its time until the customer's
        # next row, at the runs whose current period is the row's period
        cand = rows.filter(
            pl.col("so_far").round(6) / pl.col("plan_limit") >= p.approach_fraction
        )  # fmt: skip
        run_us = at["ts"].cast(pl.Int64).to_numpy()
        lo = np.searchsorted(run_us, cand["ts"].cast(pl.Int64).to_numpy(), side="left")
        nxt = cand["next_ts"].cast(pl.Int64).fill_null(np.iinfo(np.int64).max).to_numpy()
        count = np.searchsorted(run_us, nxt, side="left") - lo
        which = np.repeat(np.arange(cand.height), count)
        run = np.arange(which.size) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)
        now = (
            cand.drop("ts")
            .select(pl.all().gather(which))
            .with_columns(run=pl.Series(run, dtype=pl.Int64))
            .join(current, on=["billing_day", "run"])
            .filter(pl.col("p") == pl.col("c"))
            .join(at, on="run")
            .with_columns(pl.col("so_far").round(6).alias("used"))
            .with_columns(
                (pl.col("used") / pl.col("plan_limit")).alias("fraction"),
                period_start(pl.col("c") + 1, pl.col("billing_day")).alias("next"),
                period_start(pl.col("c"), pl.col("billing_day")).alias("period"),
            )
            .sort("ts", "customer_id")
        )
        found = self._approaching(now)
        # complete periods: the ``periods`` before each (customer, current period), worked out once
        spans = limits.join(current.select("billing_day", "c").unique(), on="billing_day")
        before = (
            spans.with_columns(pl.int_ranges(pl.col("c") - p.periods, pl.col("c")).alias("p"))
            .explode("p")
            .join(totals, on=["customer_id", "p"])
            .with_columns(
                (pl.col("used") / pl.col("plan_limit")).alias("fraction"),
                period_start(pl.col("p"), pl.col("billing_day")).alias("period"),
            )
            .sort("customer_id", "c", "p")
        )
        near = self._near_periods(before, ["customer_id", "c"]).with_columns(
            pl.lit(None, dtype=TS).alias("ts")
        )
        parts = [as_findings(pl.DataFrame(found))] if found else []
        offers = self._plan_offers(near)
        if offers:
            once = as_findings(pl.DataFrame(offers)).drop("ts").with_columns(near["c"])
            parts.append(
                once.join(limits.select("customer_id", "billing_day"), on="customer_id")
                .join(current, on=["billing_day", "c"])
                .join(at, on="run")
                .select(list(FINDINGS_SCHEMA))
            )
        if not parts:
            return empty_findings()
        return pl.concat(parts).sort("ts", "customer_id", "condition")

    def _with_billing_day(self, customers: pl.DataFrame | None, limits: pl.DataFrame) -> pl.DataFrame:
        days = customer_number(customers, self.params.billing_day_attribute).select(
            "customer_id", pl.col("value").round().cast(pl.Int64).clip(1, 31).alias("billing_day")
        )
        return limits.join(days, on="customer_id", how="left").with_columns(
            pl.col("billing_day").fill_null(1)
        )

    def _near_periods(self, complete: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        """Per ``keys``: the complete periods, in order, when ``periods`` of them are all near the limit."""
        p = self.params
        return (
            complete.group_by(keys)
            .agg(
                pl.len().alias("n"),
                pl.col("fraction").min().alias("min_fraction"),
                pl.col("fraction").mean().alias("mean_fraction"),
                pl.col("plan_limit").first(),
                pl.col("period"),
                pl.col("used"),
                pl.col("fraction"),
            )
            .filter(pl.col("n") == p.periods, pl.col("min_fraction") >= p.near_fraction)
            .sort(keys)
        )

    def _plan_offers(self, fired: pl.DataFrame) -> list[dict[str, Any]]:
        """Offer findings for :meth:`_near_periods` rows with a ``ts`` column (the run)."""
        p = self.params
        rows = []
        for r in fired.iter_rows(named=True):
            used = [_number(round(u, 1)) for u in r["used"]]
            listed = ", ".join(used[:-1]) + f" and {used[-1]}" if len(used) > 1 else used[0]
            over = any(f > 1.0 for f in r["fraction"])
            text = (
                f"Your data use has been {'close to or over' if over else 'close to'} your "
                f"{_number(r['plan_limit'])} {p.unit} monthly allowance for the last {p.periods} months "
                f"({listed} {p.unit}); a plan with more data may suit you better."
            )
            evidence = {
                "metric": p.metric,
                "plan_limit": r["plan_limit"],
                "near_fraction": p.near_fraction,
                "periods": [
                    {"start": d.isoformat(), "used": round(u, 3), "fraction": round(f, 4)}
                    for d, u, f in zip(r["period"], r["used"], r["fraction"], strict=True)
                ],
            }
            headroom = (r["min_fraction"] - p.near_fraction) / max(1e-9, 1.0 - p.near_fraction)
            rows.append(
                {
                    "customer_id": r["customer_id"],
                    "kind": self.name,
                    "condition": f"opportunity:plan_limit:{p.metric}",
                    "ts": r["ts"],
                    "score": float(r["mean_fraction"]),
                    "confidence": 0.5 + 0.5 * min(1.0, max(0.0, headroom)),
                    "severity": "info",
                    "topic": "offer",
                    "explanation": text,
                    "evidence": json.dumps(evidence, sort_keys=True),
                }
            )
        return rows

    def _approaching(self, current: pl.DataFrame) -> list[dict[str, Any]]:
        """Approaching-limit findings for current-period rows with a ``ts`` column (the run)."""
        p = self.params
        rows = []
        for r in current.filter(pl.col("fraction") >= p.approach_fraction).iter_rows(named=True):
            left = (r["next"] - r["ts"].astimezone(UTC).date()).days
            limit = f"{_number(r['plan_limit'])} {p.unit}"
            used = f"{r['used']:.1f} {p.unit}"
            days_left = "1 day" if left == 1 else f"{left} days"
            if r["fraction"] >= 1.0:
                text = (
                    f"You have used {used}, all of your {limit} data allowance, with {days_left} left "
                    "in this billing period; adding data now can avoid extra charges."
                )
            else:
                text = (
                    f"You have used {used} ({r['fraction']:.0%}) of your {limit} data allowance, "
                    f"with {days_left} left in this billing period; adding data now can avoid extra charges."
                )
            evidence = {
                "metric": p.metric,
                "plan_limit": r["plan_limit"],
                "used": round(r["used"], 3),
                "fraction": round(r["fraction"], 4),
                "period_start": r["period"].isoformat(),
                "next_period": r["next"].isoformat(),
                "days_left": left,
            }
            rows.append(
                {
                    "customer_id": r["customer_id"],
                    "kind": self.name,
                    "condition": f"opportunity:approaching_limit:{p.metric}:{r['period'].isoformat()}",
                    "ts": r["ts"],
                    "score": float(r["fraction"]),
                    "confidence": 1.0,  # metered usage already spent, not a forecast
                    "severity": "info",
                    "topic": "usage",
                    "explanation": text,
                    "evidence": json.dumps(evidence, sort_keys=True),
                }
            )
        return rows
