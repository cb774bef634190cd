"""Billing trip wire: bill shock explained by lines, errors caught on drafts, point-in-time invoice state."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from forewarn.detect import registry
from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.billing import BillingTripWire, explain_change
from forewarn.signals.schema import KINDS

PLAN = {"code": "plan", "description": "Mobile plan", "amount": 40.0, "quantity": 1.0}
ROAM = {"code": "roaming", "description": "Roaming charges", "amount": 61.2, "quantity": 1.0}


def line(code: str, description: str, amount: float, quantity: float | None = 1.0) -> dict[str, Any]:
    return {"code": code, "description": description, "amount": amount, "quantity": quantity}


def invoice(
    month: int,
    lines: list[dict[str, Any]],
    *,
    customer: str = "c1",
    status: str = "issued",
    ts: datetime | None = None,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    start = date(2025, month, 1)
    end = (start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return {
        "event_id": f"{customer}-{month}-{status}",
        "customer_id": customer,
        "ts": ts or datetime(2025, month, end.day, 12, tzinfo=UTC) + timedelta(days=2),
        "invoice_id": invoice_id or f"{customer}-INV-{month:02d}",
        "status": status,
        "period_start": start,
        "period_end": end,
        "total": round(sum(li["amount"] for li in lines), 2),
        "currency": "EUR",
        "lines": lines,
    }


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=KINDS["invoice"].polars_schema)


def history(customer: str = "c1", months: range = range(1, 7)) -> list[dict[str, Any]]:
    return [invoice(m, [PLAN, line("data", "Data pack", 10.0 + m % 3)], customer=customer) for m in months]


def test_bill_shock_fires_and_names_the_new_line() -> None:
    rows = history() + [invoice(7, [PLAN, line("data", "Data pack", 11.0), ROAM])]
    as_of = datetime(2025, 8, 3, tzinfo=UTC)
    out = BillingTripWire().detect({"invoice": frame(rows)}, as_of)
    assert out.schema == FINDINGS_SCHEMA
    row = out.row(0, named=True)
    assert (row["condition"], row["severity"], row["topic"]) == (
        "billing:shock:c1-INV-07",
        "warning",
        "billing",
    )
    assert row["explanation"] == (
        "Your bill of 112.20 EUR is 2.2x your usual 51.00 EUR; "
        "Roaming charges of 61.20 EUR are new this month."
    )
    evidence = json.loads(row["evidence"])
    assert evidence["usual"] == 51.0 and evidence["history_invoices"] == 6
    assert evidence["changed_lines"][0]["code"] == "roaming" and evidence["changed_lines"][0]["new"] is True


def test_within_band_or_short_history_does_not_fire() -> None:
    as_of = datetime(2025, 8, 3, tzinfo=UTC)
    normal = history() + [invoice(7, [PLAN, line("data", "Data pack", 14.0)])]
    assert BillingTripWire().detect({"invoice": frame(normal)}, as_of).height == 0
    short = history(months=range(6, 7)) + [invoice(7, [PLAN, ROAM])]
    assert BillingTripWire().detect({"invoice": frame(short)}, as_of).height == 0
    two = history(months=range(5, 7)) + [invoice(7, [PLAN, ROAM])]
    assert BillingTripWire().detect({"invoice": frame(two)}, as_of).height == 1
    # Old news: the shocking bill is more than recent_days old.
    shock = history() + [invoice(7, [PLAN, ROAM])]
    assert BillingTripWire().detect({"invoice": frame(shock)}, as_of + timedelta(days=60)).height == 0


def test_a_new_level_is_told_once() -> None:
    high = [PLAN, line("data", "Data pack", 11.0), ROAM]
    rows = history() + [invoice(7, high), invoice(8, high)]
    wire = BillingTripWire()
    assert wire.detect({"invoice": frame(rows)}, datetime(2025, 8, 3, tzinfo=UTC)).height == 1
    assert wire.detect({"invoice": frame(rows)}, datetime(2025, 9, 3, tzinfo=UTC)).height == 0
    again = BillingTripWire(new_jumps_only=False).detect(
        {"invoice": frame(rows)}, datetime(2025, 9, 3, tzinfo=UTC)
    )
    assert again["condition"].to_list() == ["billing:shock:c1-INV-08"]


def test_increase_and_price_change_are_explained() -> None:
    tv = line("tv", "TV package", 20.0)
    rows = [invoice(m, [PLAN, tv]) for m in range(1, 7)]
    rows.append(invoice(7, [line("plan", "Mobile plan", 55.0), line("tv", "TV package", 45.0, 2.0)]))
    out = BillingTripWire().detect({"invoice": frame(rows)}, datetime(2025, 8, 3, tzinfo=UTC))
    assert out["explanation"][0] == (
        "Your bill of 100.00 EUR is 1.7x your usual 60.00 EUR; "
        "TV package went from 20.00 EUR to 45.00 EUR and "
        "Mobile plan went from 40.00 EUR to 55.00 EUR (a price change)."
    )


def test_tax_is_not_named_as_the_cause() -> None:
    def with_tax(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*lines, line("tax", "Tax 20%", round(0.2 * sum(li["amount"] for li in lines), 2))]

    rows = [invoice(m, with_tax([PLAN])) for m in range(1, 7)]
    rows.append(invoice(7, with_tax([PLAN, line("roaming", "Roaming charges", 30.0)])))
    out = BillingTripWire(explain_share=1.0).detect(
        {"invoice": frame(rows)}, datetime(2025, 8, 3, tzinfo=UTC)
    )
    assert out["explanation"][0] == (
        "Your bill of 84.00 EUR is 1.8x your usual 48.00 EUR; "
        "Roaming charges of 30.00 EUR are new this month."
    )


def test_explain_change_ranks_by_increase() -> None:
    old = [[PLAN, line("x", "Extra", 5.0)]] * 3
    changes = explain_change([PLAN, line("x", "Extra", 9.0), ROAM], old)
    assert [(c["code"], c["change"]) for c in changes] == [("roaming", 61.2), ("x", 4.0), ("plan", 0.0)]


def test_draft_then_issued_same_condition_and_point_in_time() -> None:
    base = history()
    draft = invoice(7, [PLAN, ROAM], status="draft", ts=datetime(2025, 8, 1, tzinfo=UTC))
    issued = invoice(7, [PLAN, ROAM], ts=datetime(2025, 8, 3, tzinfo=UTC))
    rows = frame([*base, draft, issued])
    wire = BillingTripWire()
    early = wire.detect({"invoice": rows}, datetime(2025, 8, 2, tzinfo=UTC))
    late = wire.detect({"invoice": rows}, datetime(2025, 8, 4, tzinfo=UTC))
    assert early["condition"].to_list() == late["condition"].to_list() == ["billing:shock:c1-INV-07"]
    assert early["explanation"][0].startswith("Your upcoming bill of 101.20 EUR")
    assert late["explanation"][0].startswith("Your bill of 101.20 EUR")
    # The issued row (ts after the first as_of) changes nothing at that as_of.
    assert early.equals(wire.detect({"invoice": frame([*base, draft])}, datetime(2025, 8, 2, tzinfo=UTC)))
    # Nothing at all is known before the invoice exists.
    assert wire.detect({"invoice": rows}, datetime(2025, 7, 31, tzinfo=UTC)).height == 0


def test_duplicate_line_on_draft_is_caught_not_on_issued() -> None:
    data = line("data", "Data pack", 10.0)
    as_of = datetime(2025, 8, 3, tzinfo=UTC)
    draft = invoice(7, [PLAN, data, data], status="draft")
    out = BillingTripWire().detect({"invoice": frame([*history(), draft])}, as_of)
    dupes = out.filter(pl.col("condition").str.starts_with("billing:duplicate"))
    assert dupes["condition"].to_list() == ["billing:duplicate:c1-INV-07:data"]
    assert dupes["explanation"][0] == (
        "Your upcoming bill lists Data pack (10.00 EUR) twice; "
        "we are correcting it before the bill is issued."
    )
    issued = invoice(7, [PLAN, data, data])
    out = BillingTripWire().detect({"invoice": frame([*history(), issued])}, as_of)
    assert out.filter(pl.col("condition").str.starts_with("billing:duplicate")).height == 0


def test_charge_for_a_service_the_customer_does_not_have() -> None:
    deps = pl.DataFrame({"customer_id": ["c1", "c2"], "service_id": ["mobile", "tv"], "region": ["eu", "eu"]})
    lines = [line("mobile", "Mobile plan", 40.0), line("tv:premium", "Premium TV", 15.0), ROAM]
    lines.append(line("addon_mobile", "Extra SIM", 10.0))  # the customer has mobile: fine
    draft = invoice(7, lines, status="draft")
    as_of = datetime(2025, 8, 3, tzinfo=UTC)
    out = BillingTripWire().detect({"invoice": frame([draft])}, as_of, dependencies=deps)
    assert out["condition"].to_list() == ["billing:unknown_service:c1-INV-07:tv"]
    assert "Premium TV (15.00 EUR), a service that is not on your account" in out["explanation"][0]
    assert json.loads(out["evidence"][0])["customer_services"] == ["mobile"]
    # Without dependency data the check cannot judge and stays silent.
    assert BillingTripWire().detect({"invoice": frame([draft])}, as_of).height == 0
    # A service known only from the services frame is checked too.
    extra = [line("mobile", "Mobile plan", 40.0), line("cloud", "Cloud backup", 5.0)]
    out = BillingTripWire().detect(
        {"invoice": frame([invoice(7, extra, status="draft")])},
        as_of,
        dependencies=deps,
        services=pl.DataFrame({"id": ["mobile", "tv", "cloud"]}),
    )
    assert out["condition"].to_list() == ["billing:unknown_service:c1-INV-07:cloud"]
    # The add-on code convention: addon_<service>.
    addon = [line("mobile", "Mobile plan", 40.0), line("addon_tv", "TV", 20.0)]
    out = BillingTripWire().detect(
        {"invoice": frame([invoice(7, addon, status="draft")])}, as_of, dependencies=deps
    )
    assert out["condition"].to_list() == ["billing:unknown_service:c1-INV-07:tv"]


def usage(customer: str, start: date, days: int, per_day: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"u{customer}{i}" for i in range(days)],
            "customer_id": [customer] * days,
            # each day's total is stamped at the following midnight, the end of the day it measures
            "ts": [
                datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=i + 1)
                for i in range(days)
            ],
            "metric": ["data_gb"] * days,
            "value": [per_day] * days,
        }
    )


CUSTOMERS = pl.DataFrame({"id": ["c1"], "attributes": ['{"plan_limit_gb": 50}']})


def test_overage_charged_while_usage_under_limit() -> None:
    as_of = datetime(2025, 8, 3, tzinfo=UTC)
    draft = invoice(7, [PLAN, line("overage", "Data overage", 25.0, 10.0)], status="draft")
    under = usage("c1", date(2025, 7, 1), 31, 1.2)  # 37.2 GB of 50
    out = BillingTripWire().detect({"invoice": frame([draft]), "usage": under}, as_of, customers=CUSTOMERS)
    row = out.row(0, named=True)
    assert row["condition"] == "billing:usage_mismatch:c1-INV-07"
    assert "your data use this period was 37.2 GB, within your 50 GB allowance" in row["explanation"]
    assert json.loads(row["evidence"])["used"] == pytest.approx(37.2)

    over = usage("c1", date(2025, 7, 1), 31, 1.94)  # 60.1 GB: 10.1 over, 10 GB charged: consistent
    assert (
        BillingTripWire()
        .detect({"invoice": frame([draft]), "usage": over}, as_of, customers=CUSTOMERS)
        .height
        == 0
    )
    bit_over = usage("c1", date(2025, 7, 1), 31, 1.68)  # 52.1 GB: 2.1 over but 10 GB charged
    out = BillingTripWire().detect({"invoice": frame([draft]), "usage": bit_over}, as_of, customers=CUSTOMERS)
    assert "for 10 GB over your allowance" in out["explanation"][0]
    # Half the month's usage rows missing: too little evidence to accuse the bill.
    sparse = usage("c1", date(2025, 7, 1), 15, 1.2)
    assert (
        BillingTripWire()
        .detect({"invoice": frame([draft]), "usage": sparse}, as_of, customers=CUSTOMERS)
        .height
        == 0
    )
    # Usage rows after as_of are not known yet (here they would complete the month).
    late = under.with_columns(pl.col("ts") + timedelta(days=40))
    out = BillingTripWire().detect({"invoice": frame([draft]), "usage": late}, as_of, customers=CUSTOMERS)
    assert out.height == 0


def test_contract_and_bad_parameters() -> None:
    wire = registry.load("billing", z_threshold=5.0)
    assert wire.name == "billing" and "invoice" in wire.kinds and wire.params.z_threshold == 5.0
    with pytest.raises(ValueError, match="unknown parameter"):
        BillingTripWire(threshold=3)
    assert wire.detect({}, datetime(2025, 1, 1, tzinfo=UTC)).schema == FINDINGS_SCHEMA


def sim_context(customers: int = 300, days: int = 90) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """A simulated world's frames and the context a backtest gives trip wires (customers, dependencies)."""
    from forewarn.measure.backtest import data_from_world
    from forewarn.sim.world import SimConfig, simulate

    data = data_from_world(simulate(SimConfig(customers=customers, days=days, seed=3)))
    attrs = data.customers["attributes"]
    if attrs.dtype != pl.String:
        attrs = pl.Series([json.dumps(a or {}) for a in attrs.to_list()])
    cust = data.customers.select("customer_id").with_columns(attributes=attrs)
    return data.frames, {"customers": cust, "dependencies": data.dependencies}


def test_score_history_equals_detect_at_every_run_on_a_simulated_world() -> None:
    from polars.testing import assert_frame_equal

    frames, context = sim_context()
    wire = BillingTripWire()
    data = {k: frames[k] for k in wire.kinds}
    runs = [datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(days=d) for d in range(91)]
    history = wire.score_history(data, runs=runs, **context)
    every = pl.concat([wire.detect(data, r, **context) for r in runs]).sort("ts", "customer_id", "condition")
    kinds = set(history["condition"].str.split(":").list.get(1))
    assert {"shock", "duplicate", "unknown_service", "usage_mismatch"} <= kinds
    assert history["ts"].n_unique() > 40
    assert_frame_equal(history, every)
    # Invoices after a run never change its findings (the carry-forward stops at every new row).
    cut = runs[45]
    early = wire.score_history(
        {**data, "invoice": data["invoice"].filter(pl.col("ts") <= cut)}, runs=runs, **context
    )
    assert_frame_equal(early.filter(pl.col("ts") <= cut), history.filter(pl.col("ts") <= cut))
