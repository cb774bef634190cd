"""The opportunity trip wire: usage close to the plan's limit for several months, stated as a suggestion.

For each customer with a monthly data allowance (``plan_limit_gb`` in the customer's ``attributes``, see
:func:`plan_limits`), the usage of ``metric`` (kind ``usage``) is summed per complete calendar month (UTC)
up to ``as_of``. When each of the last ``periods`` complete months reached at least ``near_fraction`` of the
allowance, the trip wire suggests a larger plan: severity ``info``, topic ``offer``, condition
``opportunity:plan_limit:<metric>``. It is not an alarm: nothing is wrong, the customer may simply be better
served by another plan. Missing usage rows only lower a month's total, so gaps in data never create an offer.

Context used: ``customers`` (``id`` and ``attributes`` as a JSON string or a struct with ``plan_limit_gb``;
customers without it are skipped).

>>> from datetime import datetime, timedelta, UTC
>>> days = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=i) for i in range(120)]
>>> usage = pl.DataFrame({"customer_id": ["c1"] * 120, "metric": ["data_gb"] * 120, "ts": days,
...                       "value": [1.6] * 120})
>>> customers = pl.DataFrame({"id": ["c1"], "attributes": ['{"plan_limit_gb": 50}']})
>>> as_of = datetime(2026, 4, 15, tzinfo=UTC)
>>> out = OpportunityTripWire().detect({"usage": usage}, as_of, customers=customers)
>>> for part in out["explanation"][0].split("; "):
...     print(part)
Your data use has been close to your 50 GB monthly allowance for the last 3 months (49.6, 44.8 and 49.6 GB)
a plan with more data may suit you better.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import polars as pl

from forewarn.detect.base import Params, as_findings, empty_findings, point_in_time


@dataclass(frozen=True)
class OpportunityParams(Params):
    """Parameters of the opportunity trip wire."""

    metric: str = "data_gb"  # the usage metric the allowance is for
    limit_attribute: str = "plan_limit_gb"  # customer attribute holding the monthly allowance
    unit: str = "GB"
    periods: int = 3  # complete months in a row that must be near the limit
    near_fraction: float = 0.85  # "near": at least this fraction of the allowance


def plan_limits(customers: pl.DataFrame | None, attribute: str = "plan_limit_gb") -> pl.DataFrame:
    """(customer_id, plan_limit) for customers whose ``attributes`` (JSON or struct) hold ``attribute``.

    A top-level column named ``attribute`` also works. Customers without a positive number there are left out.

    >>> c = pl.DataFrame({"id": ["a", "b", "c"], "attributes": ['{"plan_limit_gb": 20}', "{}", None]})
    >>> plan_limits(c).rows()
    [('a', 20.0)]
    """
    empty = pl.DataFrame(schema={"customer_id": pl.String(), "plan_limit": pl.Float64()})
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
            value.cast(pl.Float64(), strict=False).alias("plan_limit"),
        )
        .filter(pl.col("plan_limit") > 0)
        .unique("customer_id", keep="last")
    )


def _month_start(ts: datetime, back: int = 0) -> datetime:
    index = ts.year * 12 + ts.month - 1 - back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _number(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.1f}"


class OpportunityTripWire:
    """Usage near the plan limit for several complete months: suggest a better-fitting plan."""

    name: ClassVar[str] = "opportunity"
    kinds: ClassVar[tuple[str, ...]] = ("usage",)

    def __init__(self, **overrides: Any) -> None:
        known = {f.name for f in fields(OpportunityParams)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(
                f"opportunity trip wire: unknown parameter(s) {sorted(unknown)}; expected {sorted(known)}"
            )
        self.params = replace(OpportunityParams(), **overrides)

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        p = self.params
        as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
        usage = frames.get("usage")
        limits = plan_limits(context.get("customers"), p.limit_attribute)
        if usage is None or usage.height == 0 or limits.height == 0:
            return empty_findings()
        current = _month_start(as_of)  # months from here on are not complete yet
        first = _month_start(as_of, p.periods)
        monthly = (
            point_in_time(usage, as_of)
            .filter(pl.col("metric") == p.metric, pl.col("ts") >= first, pl.col("ts") < current)
            .group_by("customer_id", pl.col("ts").dt.truncate("1mo").alias("month"))
            .agg(pl.col("value").sum().alias("used"))
            .join(limits, on="customer_id")
            .with_columns((pl.col("used") / pl.col("plan_limit")).alias("fraction"))
            .sort("customer_id", "month")
        )
        fired = (
            monthly.group_by("customer_id")
            .agg(
                pl.len().alias("months"),
                pl.col("fraction").min().alias("min_fraction"),
                pl.col("fraction").mean().alias("mean_fraction"),
                pl.col("plan_limit").first(),
                pl.col("month"),
                pl.col("used"),
                pl.col("fraction"),
            )
            .filter(pl.col("months") == p.periods, pl.col("min_fraction") >= p.near_fraction)
            .sort("customer_id")
        )
        if fired.height == 0:
            return empty_findings()
        rows = []
        for r in fired.iter_rows(named=True):
            used = [_number(round(u, 1)) for u in r["used"]]
            listed = ", ".join(used[:-1]) + f" and {used[-1]}" if len(used) > 1 else used[0]
            over = any(f > 1.0 for f in r["fraction"])
            limit = _number(r["plan_limit"])
            text = (
                f"Your data use has been {'close to or over' if over else 'close to'} your {limit} {p.unit} "
                f"monthly allowance for the last {p.periods} months ({listed} {p.unit}); "
                "a plan with more data may suit you better."
            )
            evidence = {
                "metric": p.metric,
                "plan_limit": r["plan_limit"],
                "near_fraction": p.near_fraction,
                "months": [
                    {"month": m.strftime("%Y-%m"), "used": round(u, 3), "fraction": round(f, 4)}
                    for m, u, f in zip(r["month"], r["used"], r["fraction"], strict=True)
                ],
            }
            headroom = (r["min_fraction"] - p.near_fraction) / max(1e-9, 1.0 - p.near_fraction)
            rows.append(
                {
                    "customer_id": r["customer_id"],
                    "kind": self.name,
                    "condition": f"opportunity:plan_limit:{p.metric}",
                    "ts": as_of,
                    "score": float(r["mean_fraction"]),
                    "confidence": 0.5 + 0.5 * min(1.0, max(0.0, headroom)),
                    "severity": "info",
                    "topic": "offer",
                    "explanation": text,
                    "evidence": json.dumps(evidence, sort_keys=True),
                }
            )
        return as_findings(pl.DataFrame(rows))
