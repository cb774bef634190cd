"""Schedule trip wire: renewals, card expiry, maintenance for dependents, late shipments, point-in-time."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import pytest

from forewarn.detect import registry
from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.schedule import ScheduleTripWire
from forewarn.signals.schema import KINDS

AS_OF = datetime(2026, 3, 1, 9, tzinfo=UTC)


def sub(customer: str, event_type: str, due: date | None, ts: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{event_type}-{ts.isoformat()}",
        "customer_id": customer,
        "ts": ts,
        "event_type": event_type,
        "due_date": due,
        **extra,
    }


def subs(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = KINDS["subscription"].polars_schema
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def ship(shipment: str, promised: date, expected: date, status: str, ts: datetime) -> dict[str, Any]:
    return {
        "event_id": f"{shipment}-{ts.isoformat()}",
        "customer_id": "c1",
        "ts": ts,
        "shipment_id": shipment,
        "promised_date": promised,
        "expected_date": expected,
        "status": status,
        "carrier": "DHL",
    }


def ships(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=KINDS["shipment"].polars_schema)


def test_renewal_in_lead_window_and_cancellation() -> None:
    known = datetime(2026, 1, 10, tzinfo=UTC)
    rows = [
        sub("c1", "renewal_due", date(2026, 3, 10), known, plan_to="Premium"),
        sub("c2", "renewal_due", date(2026, 4, 20), known),  # too far ahead
        sub("c3", "renewal_due", date(2026, 3, 5), known),
        sub("c3", "cancellation", None, datetime(2026, 2, 1, tzinfo=UTC)),  # cancelled after the notice
        sub("c4", "renewal_due", date(2026, 2, 20), known),  # already past
    ]
    out = ScheduleTripWire().detect({"subscription": subs(rows)}, AS_OF)
    assert out.schema == FINDINGS_SCHEMA
    assert out["customer_id"].to_list() == ["c1"]
    row = out.row(0, named=True)
    assert row["condition"] == "schedule:renewal_due:2026-03-10"
    assert row["explanation"] == "Your Premium subscription renews on 10 March 2026 (in 9 days)."
    assert (row["severity"], row["topic"], row["confidence"]) == ("info", "account", 1.0)


def test_card_expiry_and_nearer_scores_higher() -> None:
    known = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        sub("c1", "card_expiry", date(2026, 3, 31), known),
        sub("c2", "card_expiry", date(2026, 3, 3), known),
    ]
    out = ScheduleTripWire().detect({"subscription": subs(rows)}, AS_OF)
    assert out["condition"].to_list() == [
        "schedule:card_expiry:2026-03-31",
        "schedule:card_expiry:2026-03-03",
    ]
    assert set(out["topic"]) == {"billing"} and set(out["severity"]) == {"warning"}
    assert out["score"][1] > out["score"][0]
    assert out["explanation"][1].startswith("The card on your account expires on 3 March 2026 (in 2 days)")


def test_plan_change_notice() -> None:
    known = datetime(2026, 1, 5, tzinfo=UTC)
    details = "promotional price ends: monthly fee 30.00 -> 45.00"
    rows = [
        sub(
            "c1", "plan_change", date(2026, 3, 11), known, plan_from="Basic", plan_to="Basic", details=details
        ),
        sub("c2", "plan_change", date(2026, 3, 8), known, plan_from="Basic", plan_to="Plus"),
        sub("c3", "plan_change", date(2026, 4, 8), known, plan_from="Basic", plan_to="Plus"),  # later
    ]
    out = ScheduleTripWire().detect({"subscription": subs(rows)}, AS_OF)
    assert out["explanation"].to_list() == [
        "Your Basic plan changes on 11 March 2026 (in 10 days): "
        "promotional price ends: monthly fee 30.00 -> 45.00.",
        "Your plan changes from Basic to Plus on 8 March 2026 (in 7 days).",
    ]
    assert out["condition"][0] == "schedule:plan_change:2026-03-11" and set(out["topic"]) == {"billing"}


def test_maintenance_reaches_dependents_only() -> None:
    deps = pl.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c4"],
            "service_id": ["broadband", "broadband", "tv", "broadband"],
            "region": ["north", "south", "north", "north"],
        }
    )
    details = json.dumps({"region": "north", "window": "02:00-04:00 UTC"})
    rows = [
        sub(
            "*",
            "maintenance",
            date(2026, 3, 4),
            datetime(2026, 2, 20, tzinfo=UTC),
            service_id="broadband",
            details=details,
        ),
        sub("c3", "maintenance", date(2026, 3, 5), datetime(2026, 2, 20, tzinfo=UTC), service_id="broadband"),
    ]
    out = ScheduleTripWire().detect({"subscription": subs(rows)}, AS_OF, dependencies=deps)
    # c2 is in another region; c3 has its own row but does not use broadband.
    assert out["customer_id"].to_list() == ["c1", "c4"]
    assert set(out["condition"]) == {"schedule:maintenance:broadband:2026-03-04"}
    assert out["explanation"][0] == (
        "Planned maintenance on broadband on 4 March 2026 at 02:00-04:00 UTC (in 3 days) "
        "may briefly interrupt your service."
    )
    assert out["topic"][0] == "outage"


def test_newer_notice_replaces_older_and_point_in_time() -> None:
    rows = [
        sub("c1", "maintenance", date(2026, 3, 3), datetime(2026, 2, 20, tzinfo=UTC), service_id="tv"),
        sub(
            "c1", "maintenance", date(2026, 3, 20), datetime(2026, 2, 27, tzinfo=UTC), service_id="tv"
        ),  # moved
    ]
    out = ScheduleTripWire().detect({"subscription": subs(rows)}, AS_OF)
    assert out.height == 0  # moved out of the 7-day window
    before_move = ScheduleTripWire().detect({"subscription": subs(rows)}, datetime(2026, 2, 26, tzinfo=UTC))
    assert before_move["condition"].to_list() == ["schedule:maintenance:tv:2026-03-03"]
    # A notice recorded after as_of is not known at as_of, even though its due date is ahead.
    future = [sub("c1", "renewal_due", date(2026, 3, 5), datetime(2026, 3, 2, tzinfo=UTC))]
    assert ScheduleTripWire().detect({"subscription": subs(future)}, AS_OF).height == 0


def test_late_shipments() -> None:
    seen = datetime(2026, 2, 27, tzinfo=UTC)
    rows = [
        ship("S1", date(2026, 3, 2), date(2026, 3, 5), "delayed", seen),  # pushed back 3 days
        ship("S2", date(2026, 2, 27), date(2026, 2, 27), "in_transit", seen),  # promise passed, no update
        ship("S3", date(2026, 3, 2), date(2026, 3, 2), "in_transit", seen),  # on time
        ship("S4", date(2026, 2, 25), date(2026, 2, 25), "in_transit", seen),
        ship("S4", date(2026, 2, 25), date(2026, 2, 25), "delivered", datetime(2026, 2, 28, tzinfo=UTC)),
        ship("S5", date(2026, 3, 1), date(2026, 3, 1), "lost", seen),
    ]
    out = ScheduleTripWire().detect({"shipment": ships(rows)}, AS_OF)
    by_id = {json.loads(r["evidence"])["shipment_id"]: r for r in out.iter_rows(named=True)}
    assert sorted(by_id) == ["S1", "S2", "S5"]
    assert by_id["S1"]["explanation"] == (
        "Your order S1 is now expected on 5 March 2026, 3 days later than the 2 March 2026 we promised."
    )
    assert by_id["S2"]["explanation"] == (
        "Your order S2 was due on 27 February 2026 and has not arrived yet; we are checking with DHL."
    )
    assert by_id["S5"]["severity"] == "critical" and by_id["S1"]["topic"] == "shipping"
    # The delivery row of S4 is after an earlier as_of: then S4 was still late.
    earlier = ScheduleTripWire().detect({"shipment": ships(rows)}, datetime(2026, 2, 27, 12, tzinfo=UTC))
    assert "schedule:shipment_late:S4" in earlier["condition"].to_list()


def test_contract_and_bad_parameters() -> None:
    wire = registry.load("schedule", renewal_lead_days=30)
    assert wire.name == "schedule" and set(wire.kinds) == {"subscription", "shipment"}
    with pytest.raises(ValueError, match="unknown parameter"):
        ScheduleTripWire(lead=3)
    assert wire.detect({}, AS_OF).height == 0
