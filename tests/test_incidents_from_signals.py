"""Service-level anomaly -> incident, with the detection time as started_at; point in time; idempotent."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from forewarn.incidents.from_signals import apply_events, service_events
from forewarn.incidents.service import list_incidents
from forewarn.state.db import transaction
from incident_helpers import T0, outbox, seed_isp

STEP = timedelta(minutes=5)


def health(
    n: int = 120, outage: tuple[int, int] = (80, 95), south: tuple[int, int] | None = None
) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        ts = T0 + i * STEP
        down = outage[0] <= i < outage[1]
        for region, base in (("north", 1000.0), ("south", 800.0)):
            hit = (down and region == "north") or (
                south is not None and region == "south" and south[0] <= i < south[1]
            )
            req = base * (0.2 if hit else 1) * (1 + 0.03 * rng.standard_normal())
            err = (0.25 if hit else 0.01) * (1 + 0.2 * rng.standard_normal())
            rows += [
                {
                    "event_id": f"{i}-{region}-r",
                    "ts": ts,
                    "service_id": "internet",
                    "region": region,
                    "metric": "requests",
                    "value": req,
                },
                {
                    "event_id": f"{i}-{region}-e",
                    "ts": ts,
                    "service_id": "internet",
                    "region": region,
                    "metric": "error_rate",
                    "value": err,
                },
            ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def test_outage_detected_in_the_right_region_and_resolved() -> None:
    events = service_events(health())
    assert [(e.kind, e.region) for e in events] == [("open", "north"), ("resolve", "north")]
    opened, resolved = events
    assert opened.ts == T0 + 81 * STEP  # confirmed on the second bad point
    assert set(opened.evidence) == {"requests", "error_rate"}
    assert resolved.ts == T0 + 95 * STEP  # the first healthy point


def test_point_in_time_no_future_rows_change_the_past() -> None:
    full = health()
    cut = T0 + 85 * STEP
    assert service_events(full, as_of=cut) == service_events(full.filter(pl.col("ts") <= cut))
    assert [e.kind for e in service_events(full, as_of=cut)] == ["open"]
    assert service_events(full, as_of=T0 + 80 * STEP) == []  # one bad point is not yet an outage


def test_apply_opens_with_detection_time_and_is_idempotent(ctx) -> None:
    seed_isp(ctx.engine)
    events = service_events(health())
    for _ in range(2):
        with transaction(ctx.engine) as s:
            apply_events(s, events)
    with transaction(ctx.engine) as s:
        [inc] = list_incidents(s)
        assert inc.source == "detector" and inc.status == "resolved"
        assert inc.started_at == T0 + 81 * STEP and inc.resolved_at == T0 + 95 * STEP
        assert {(sc.service_id, sc.region) for sc in inc.scopes} == {("internet", "north")}
    templates = [m.payload["template"] for m in outbox(ctx.engine, inc.id) if m.customer_id == "C00"]
    assert templates == ["incident_open", "incident_resolved"]


def test_spreading_outage_widens_one_incident_and_resolves_when_all_regions_recover(ctx) -> None:
    seed_isp(ctx.engine)
    frame = health(outage=(80, 95), south=(86, 100))
    events = service_events(frame)
    assert [(e.kind, e.region) for e in events] == [
        ("open", "north"),
        ("open", "south"),
        ("resolve", "north"),
        ("resolve", "south"),
    ]
    # replayed step by step (live syncs) and then all at once: the same single incident
    for k in range(1, len(events) + 1):
        with transaction(ctx.engine) as s:
            apply_events(s, events[:k])
    with transaction(ctx.engine) as s:
        apply_events(s, events)
        [inc] = list_incidents(s)
        assert {sc.region for sc in inc.scopes} == {"north", "south"}
        assert inc.status == "resolved" and inc.resolved_at == T0 + 100 * STEP
    rows = outbox(ctx.engine, inc.id)
    per = {}
    for m in rows:
        per.setdefault(m.customer_id, []).append(m.payload["template"])
    assert per["C00"] == ["incident_open", "incident_update", "incident_resolved"]
    assert per["C06"] == ["incident_open", "incident_resolved"]  # south: caught up, then the all-clear


@pytest.mark.slow
def test_simulated_world_every_disruption_found_no_false_alarms() -> None:
    """On the simulator's service health (ground truth known): each outage/maintenance window is detected
    within 15 minutes of its start and resolved within 15 minutes of its end; nothing else alarms."""
    from forewarn.sim.config import SimConfig
    from forewarn.sim.world import simulate

    world = simulate(SimConfig(customers=2000, days=90, seed=1))
    events = service_events(world.frames["service_metric"])
    truth = world.truth.filter(pl.col("type").is_in(["outage", "maintenance"])).explode("regions")
    opens = [e for e in events if e.kind == "open"]
    assert len(opens) == truth.height
    for row in truth.iter_rows(named=True):
        [hit] = [
            e
            for e in opens
            if (e.service_id, e.region) == (row["service_id"], row["regions"])
            and row["start"] <= e.ts <= row["start"] + timedelta(minutes=15)
        ]
        [end] = [
            e
            for e in events
            if e.kind == "resolve"
            and e.opened_at == hit.opened_at
            and e.service_id == hit.service_id
            and e.region == hit.region
        ]
        assert abs(end.ts - row["end"]) <= timedelta(minutes=15)


def test_an_episode_inside_announced_maintenance_opens_nothing() -> None:
    """The same dip is an incident without an announcement, and nothing with one made before it; an
    announcement made after the dip started, or for another region, explains nothing."""
    from forewarn.incidents.from_signals import maintenance_windows

    frame = health()
    opened = [e for e in service_events(frame) if e.kind == "open"]
    assert opened
    t = opened[0].ts
    due = t.date()

    def windows(announced, region: str) -> list:
        subs = pl.DataFrame(
            {
                "customer_id": ["c1"],
                "ts": [announced],
                "event_type": ["maintenance"],
                "due_date": [due],
                "service_id": [opened[0].service_id],
                "details": [None],
            }
        )
        deps = pl.DataFrame({"customer_id": ["c1"], "service_id": [opened[0].service_id], "region": [region]})
        return maintenance_windows(subs, deps)

    week_before = t - timedelta(days=7)
    assert not service_events(frame, maintenance=windows(week_before, opened[0].region))
    assert service_events(frame, maintenance=windows(t + timedelta(hours=1), opened[0].region)) == (
        service_events(frame)
    )
    assert service_events(frame, maintenance=windows(week_before, "elsewhere")) == service_events(frame)
