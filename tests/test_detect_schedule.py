"""Schedule trip wire: renewals, card expiry, maintenance for dependents, late shipments, point-in-time."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from forewarn.detect import registry
from forewarn.detect.base import FINDINGS_SCHEMA
from forewarn.detect.history import daily_runs
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


def _every_run(
    wire: ScheduleTripWire, frames: dict[str, pl.DataFrame], runs: list, **context: Any
) -> pl.DataFrame:
    parts = [wire.detect(frames, r, **context) for r in runs]
    parts = [p for p in parts if p.height]
    return pl.concat(parts) if parts else pl.DataFrame(schema=FINDINGS_SCHEMA)


def _same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    keys = list(FINDINGS_SCHEMA)
    assert_frame_equal(a.sort(keys), b.sort(keys))


@pytest.fixture(scope="module")
def world() -> Any:
    from forewarn.measure.backtest import data_from_world
    from forewarn.sim.world import SimConfig, simulate

    return data_from_world(simulate(SimConfig(customers=300, days=90, seed=3)))


def test_score_history_equals_detect_at_every_run_on_a_simulated_world(world: Any) -> None:
    frames = {k: world.frames[k] for k in ("subscription", "shipment")}
    runs = daily_runs(world.frames, ["usage"])
    wire = ScheduleTripWire()
    hist = wire.score_history(frames, runs=runs, dependencies=world.dependencies)
    every = _every_run(wire, frames, runs, dependencies=world.dependencies)
    # the world has notices of every kind, and their days-left changes from run to run
    kinds = set(hist["condition"].str.split(":").list.get(1))
    assert {"renewal_due", "card_expiry", "plan_change", "maintenance", "shipment_late"} <= kinds
    assert hist["explanation"].n_unique() > hist.select("customer_id", "condition").n_unique()
    _same(hist, every)
    # other lead windows: still the same as detect
    wire = ScheduleTripWire(maintenance_lead_days=2, card_expiry_lead_days=45, shipment_grace_days=1)
    _same(
        wire.score_history(frames, runs=runs[::3], dependencies=world.dependencies),
        _every_run(wire, frames, runs[::3], dependencies=world.dependencies),
    )


def test_score_history_is_point_in_time(world: Any) -> None:
    frames = {k: world.frames[k] for k in ("subscription", "shipment")}
    runs = daily_runs(world.frames, ["usage"])
    cut = runs[len(runs) // 2]
    wire = ScheduleTripWire()
    full = wire.score_history(frames, runs=runs, dependencies=world.dependencies)
    known = {k: f.filter(pl.col("ts") <= cut) for k, f in frames.items()}
    early = wire.score_history(known, runs=runs, dependencies=world.dependencies)
    # rows after a run never change that run's findings
    _same(full.filter(pl.col("ts") <= cut), early.filter(pl.col("ts") <= cut))
    assert full.filter(pl.col("ts") > cut).height != early.filter(pl.col("ts") > cut).height


def test_score_history_broadcasts_cancellations_moves_and_lost_shipments() -> None:
    deps = pl.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c1"],
            "service_id": ["broadband", "broadband", "tv", "tv"],
            "region": ["north", "south", "north", "north"],
        }
    )
    t = datetime(2026, 2, 20, tzinfo=UTC)
    region = json.dumps({"region": "north", "window": "02:00-04:00 UTC"})
    rows = [
        sub("*", "maintenance", date(2026, 3, 4), t, service_id="broadband", details=region),
        sub("c1", "maintenance", date(2026, 3, 4), t, service_id="broadband"),  # also its own row
        sub("*", "maintenance", date(2026, 3, 3), t, service_id="tv"),
        sub("*", "maintenance", date(2026, 3, 9), datetime(2026, 2, 27, 10, tzinfo=UTC), service_id="tv"),
        sub("c2", "renewal_due", date(2026, 3, 8), t, plan_to="Plus"),
        sub("c2", "cancellation", None, datetime(2026, 3, 2, 8, tzinfo=UTC)),  # stops the renewal notice
        sub("c3", "renewal_due", date(2026, 3, 8), t),
        sub("c3", "cancellation", None, datetime(2026, 2, 1, tzinfo=UTC)),  # before the notice: no effect
        sub("c3", "card_expiry", date(2026, 3, 31), t),
        sub("c3", "card_expiry", date(2026, 3, 31), t, details="same time, later in the data: this one"),
    ]
    seen = datetime(2026, 2, 25, tzinfo=UTC)
    shipments = [
        ship("S1", date(2026, 2, 27), date(2026, 3, 4), "delayed", seen),
        ship("S1", date(2026, 2, 27), date(2026, 3, 4), "delivered", datetime(2026, 3, 3, 12, tzinfo=UTC)),
        ship("S2", date(2026, 2, 26), date(2026, 2, 26), "in_transit", seen),
        ship("S3", date(2026, 3, 20), date(2026, 3, 20), "lost", datetime(2026, 2, 28, tzinfo=UTC)),
    ]
    frames = {"subscription": subs(rows), "shipment": ships(shipments)}
    runs = [datetime(2026, 2, 18, 9, tzinfo=UTC) + timedelta(days=d) for d in range(30)]
    wire = ScheduleTripWire()
    hist = wire.score_history(frames, runs=runs, dependencies=deps)
    _same(hist, _every_run(wire, frames, runs, dependencies=deps))
    at = {r: hist.filter(pl.col("ts") == r) for r in runs}
    march_1 = at[datetime(2026, 3, 1, 9, tzinfo=UTC)]
    assert set(march_1.filter(pl.col("condition") == "schedule:renewal_due:2026-03-08")["customer_id"]) == {
        "c2",
        "c3",
    }
    march_2 = at[datetime(2026, 3, 2, 9, tzinfo=UTC)]
    assert set(march_2.filter(pl.col("condition") == "schedule:renewal_due:2026-03-08")["customer_id"]) == {
        "c3"
    }
    card = march_2.filter(pl.col("condition") == "schedule:card_expiry:2026-03-31")
    assert card.height == 1 and json.loads(card["evidence"][0])["details"] == {
        "text": "same time, later in the data: this one"
    }
    # the tv maintenance moved on 27 Feb: the 3 March one stops, the 9 March one starts at its window
    tv = hist.filter(pl.col("condition").str.starts_with("schedule:maintenance:tv"))
    assert tv.filter(pl.col("condition").str.ends_with("03-03"))["ts"].max() == datetime(
        2026, 2, 27, 9, tzinfo=UTC
    )
    assert set(tv["customer_id"]) == {"c1", "c3"}
    # c1 has the broadcast and its own row for the same maintenance (both fire, as in detect); c2 is south
    bb = march_1.filter(pl.col("condition") == "schedule:maintenance:broadband:2026-03-04")
    assert bb["customer_id"].to_list() == ["c1", "c1"]
    late = hist.filter(pl.col("topic") == "shipping")
    s1 = late.filter(pl.col("condition") == "schedule:shipment_late:S1")
    assert s1["ts"].max() == datetime(2026, 3, 3, 9, tzinfo=UTC)  # delivered at noon on 3 March
    s2 = late.filter(pl.col("condition") == "schedule:shipment_late:S2")
    assert s2["ts"].min() == datetime(2026, 2, 27, 9, tzinfo=UTC) and s2["score"][0] == 1.0
    assert set(late.filter(pl.col("condition") == "schedule:shipment_late:S3")["severity"]) == {"critical"}
    assert wire.score_history({}, runs=runs).height == 0
    assert wire.score_history(frames, runs=[]).height == 0
