"""Opportunity trip wire: near the plan limit for several complete months, as an offer."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from forewarn.detect import registry
from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.opportunity import OpportunityTripWire, plan_limits

AS_OF = datetime(2026, 5, 10, tzinfo=UTC)


def monthly_usage(customer: str, per_month: dict[str, float]) -> pl.DataFrame:
    """Daily data_gb rows spreading each month's total evenly over its days."""
    rows = []
    for month, total in per_month.items():
        start = date.fromisoformat(month + "-01")
        end = (start + timedelta(days=32)).replace(day=1)
        n = (end - start).days
        for i in range(n):
            day = start + timedelta(days=i)
            rows.append(
                {
                    "event_id": f"{customer}-{day}",
                    "customer_id": customer,
                    "ts": datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
                    "metric": "data_gb",
                    "value": total / n,
                }
            )
    return pl.DataFrame(rows)


CUSTOMERS = pl.DataFrame(
    {
        "id": ["near", "under", "nolimit"],
        "attributes": ['{"plan_limit_gb": 50}', '{"plan_limit_gb": 100}', "{}"],
    }
)


def test_fires_for_three_months_near_the_limit_only() -> None:
    months = {"2026-02": 46.0, "2026-03": 48.0, "2026-04": 52.0, "2026-05": 80.0}  # May is not complete
    usage = pl.concat(
        [
            monthly_usage("near", months),
            monthly_usage("under", months),  # 50% of a 100 GB plan
            monthly_usage("nolimit", months),
        ]
    )
    out = OpportunityTripWire().detect({"usage": usage}, AS_OF, customers=CUSTOMERS)
    assert out.schema == FINDINGS_SCHEMA
    assert out["customer_id"].to_list() == ["near"]
    assert out["condition"].to_list() == ["opportunity:plan_limit:data_gb"]
    row = out.row(0, named=True)
    assert (row["condition"], row["severity"], row["topic"]) == (
        "opportunity:plan_limit:data_gb",
        "info",
        "offer",
    )
    assert row["explanation"] == (
        "Your data use has been close to or over your 50 GB monthly allowance for the last 3 months "
        "(46, 48 and 52 GB); a plan with more data may suit you better."
    )
    evidence = json.loads(row["evidence"])
    assert [m["start"] for m in evidence["periods"]] == ["2026-02-01", "2026-03-01", "2026-04-01"]
    assert evidence["periods"][2]["used"] == pytest.approx(52.0)
    # May so far (9 days of a 80 GB pace) is below the 80% notice: only the offer fires.
    assert out.height == 1


def test_one_month_well_below_or_too_few_months_does_not_fire() -> None:
    dip = monthly_usage("near", {"2026-02": 46.0, "2026-03": 30.0, "2026-04": 49.0})
    assert OpportunityTripWire().detect({"usage": dip}, AS_OF, customers=CUSTOMERS).height == 0
    new = monthly_usage("near", {"2026-03": 48.0, "2026-04": 49.0})
    assert OpportunityTripWire().detect({"usage": new}, AS_OF, customers=CUSTOMERS).height == 0
    assert OpportunityTripWire(periods=2).detect({"usage": new}, AS_OF, customers=CUSTOMERS).height == 1


def test_point_in_time_and_other_metrics_ignored() -> None:
    usage = monthly_usage("near", {"2026-02": 46.0, "2026-03": 48.0, "2026-04": 49.0})
    # At 2026-04-20 April is not complete: only Feb and Mar count, too few months.
    assert (
        OpportunityTripWire()
        .detect({"usage": usage}, datetime(2026, 4, 20, tzinfo=UTC), customers=CUSTOMERS)
        .height
        == 0
    )
    minutes = usage.with_columns(pl.lit("minutes").alias("metric"))
    assert OpportunityTripWire().detect({"usage": minutes}, AS_OF, customers=CUSTOMERS).height == 0
    # Rows after as_of never count, whatever their size.
    later = monthly_usage("near", {"2026-06": 500.0})
    base = OpportunityTripWire().detect({"usage": usage}, AS_OF, customers=CUSTOMERS)
    assert base.equals(
        OpportunityTripWire().detect({"usage": pl.concat([usage, later])}, AS_OF, customers=CUSTOMERS)
    )


def test_plan_limits_from_struct_json_or_column() -> None:
    struct = pl.DataFrame(
        {"id": ["a", "b"], "attributes": [{"plan_limit_gb": 20.0}, {"plan_limit_gb": None}]}
    )
    assert plan_limits(struct).rows() == [("a", 20.0)]
    column = pl.DataFrame({"customer_id": ["a"], "plan_limit_gb": [30]})
    assert plan_limits(column).rows() == [("a", 30.0)]
    assert plan_limits(pl.DataFrame({"id": ["a"], "attributes": ['{"plan": "x"}']})).height == 0
    assert plan_limits(None).height == 0
    with pytest.raises(ValueError, match="'id'"):
        plan_limits(pl.DataFrame({"name": ["a"]}))


def test_without_customers_nothing_fires_and_contract() -> None:
    usage = monthly_usage("near", {"2026-02": 46.0, "2026-03": 48.0, "2026-04": 49.0})
    assert OpportunityTripWire().detect({"usage": usage}, AS_OF).height == 0
    wire = registry.load("opportunity", near_fraction=0.9)
    assert wire.name == "opportunity" and wire.kinds == ("usage",)
    assert wire.detect({"usage": usage}, AS_OF, customers=CUSTOMERS).height == 1
    with pytest.raises(ValueError, match="unknown parameter"):
        OpportunityTripWire(limit=3)


def test_approaching_limit_in_the_current_billing_period() -> None:
    customers = pl.DataFrame({"id": ["c1"], "attributes": ['{"plan_limit_gb": 50, "billing_day": 14}']})
    usage = monthly_usage("c1", {"2026-04": 30.0, "2026-05": 124.0})  # 1 GB a day in April, 4 GB in May
    # Period 2026-04-14 .. 05-13; on 05-09 it has used 17 x 1 + 9 x 4 = 53 GB.
    out = OpportunityTripWire().detect(
        {"usage": usage}, datetime(2026, 5, 9, 12, tzinfo=UTC), customers=customers
    )
    row = out.row(0, named=True)
    assert row["condition"] == "opportunity:approaching_limit:data_gb:2026-04-14"
    assert (row["topic"], row["severity"]) == ("usage", "info")
    assert row["explanation"] == (
        "You have used 53.0 GB, all of your 50 GB data allowance, with 5 days left in this billing period; "
        "adding data now can avoid extra charges."
    )
    # On 05-06: 17 + 6 x 4 = 41 GB = 82%.
    out = OpportunityTripWire().detect(
        {"usage": usage}, datetime(2026, 5, 6, 12, tzinfo=UTC), customers=customers
    )
    assert (
        "You have used 41.0 GB (82%) of your 50 GB data allowance, with 8 days left" in out["explanation"][0]
    )
    # On 05-04: 17 + 4 x 4 = 33 GB = 66%: nothing to say yet.
    assert (
        OpportunityTripWire()
        .detect({"usage": usage}, datetime(2026, 5, 4, 12, tzinfo=UTC), customers=customers)
        .height
        == 0
    )
    # A new period starts on 05-14: the count starts again.
    assert (
        OpportunityTripWire()
        .detect({"usage": usage}, datetime(2026, 5, 15, 12, tzinfo=UTC), customers=customers)
        .height
        == 0
    )


def test_score_history_equals_detect_at_every_run() -> None:
    from polars.testing import assert_frame_equal

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    per_day = {"a": 1.7, "b": 1.0, "c": 0.4, "d": 2.2}
    for c, amount in per_day.items():
        for q in range(150 * 4):  # every 6 hours, stamped at the end of the quarter day
            rows.append((c, "data_gb", start + timedelta(hours=6 * q), amount / 4 * (1 + (q % 7) / 10)))
    usage = pl.DataFrame(
        rows, schema={"customer_id": pl.String, "metric": pl.String, "ts": pl.Datetime("us", "UTC"),
                      "value": pl.Float64}, orient="row",
    )  # fmt: skip
    attrs = {"a": {"plan_limit_gb": 60, "billing_day": 14}, "b": {"plan_limit_gb": 40, "billing_day": 31},
             "c": {"plan_limit_gb": 20}, "d": {"plan_limit_gb": 70, "billing_day": 1}}  # fmt: skip
    customers = pl.DataFrame({"id": list(attrs), "attributes": [json.dumps(a) for a in attrs.values()]})
    wire = OpportunityTripWire()
    runs = [start + timedelta(days=d, hours=h) for d in range(155) for h in (5, 9)]
    history = wire.score_history({"usage": usage}, runs=runs, customers=customers)
    every = pl.concat([wire.detect({"usage": usage}, r, customers=customers) for r in runs])
    assert set(history["condition"].str.split(":").list.get(1)) == {"plan_limit", "approaching_limit"}
    assert_frame_equal(history, every.sort("ts", "customer_id", "condition"))
    # default runs: daily at 09:00 UTC over the usage's span
    daily = wire.score_history({"usage": usage}, customers=customers)
    assert daily["ts"].dt.hour().unique().to_list() == [9]
    assert_frame_equal(daily, history.filter(pl.col("ts").dt.hour() == 9, pl.col("ts") <= usage["ts"].max()))
