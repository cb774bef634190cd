"""Incidents: impact from data, the notice series, widening, consent; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from forewarn.incidents import service
from forewarn.incidents.impact import affected_count
from forewarn.incidents.metrics import incident_metrics
from forewarn.state.db import transaction
from forewarn.state.models import AffectedCustomer, Dependency, OutboxMessage
from incident_helpers import T0, outbox, seed_isp, store


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest):
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    eng = store(url)
    seed_isp(eng)
    yield eng
    eng.dispose()


def affected(engine, incident_id: int) -> set[str]:
    with transaction(engine) as s:
        return set(
            s.scalars(select(AffectedCustomer.customer_id).where(AffectedCustomer.incident_id == incident_id))
        )


def test_impact_is_the_dependents_in_the_region(engine) -> None:
    with transaction(engine) as s:
        north = service.open_incident(s, title="Down", services=["internet"], regions=["north"], now=T0).id
        tv_all = service.open_incident(s, title="TV", services=["tv"], now=T0).id
        both = service.open_incident(
            s, title="Both", services=["internet", "tv"], regions=["south"], now=T0
        ).id
    assert affected(engine, north) == {f"C{i:02d}" for i in range(6)}
    assert affected(engine, tv_all) == {f"C{i:02d}" for i in range(0, 12, 2)}
    # a customer on two scoped services is affected once
    assert affected(engine, both) == {"C06", "C07", "C08"}


def test_active_customers_only(engine) -> None:
    from forewarn.incidents.impact import ImpactFilter

    with transaction(engine) as s:
        inc = service.open_incident(
            s,
            title="Down",
            services=["internet"],
            regions=["north"],
            impact=ImpactFilter(active_days=30),
            activity=lambda start, end: ["C00", "C02", "C09"],
            now=T0,
        )
    assert affected(engine, inc.id) == {"C00", "C02"}


def test_notice_series_three_per_consenting_customer_in_order(engine) -> None:
    with transaction(engine) as s:
        inc = service.open_incident(
            s, title="Internet down", services=["internet"], regions=["north"], now=T0
        )
    with transaction(engine) as s:
        service.post_update(
            s,
            inc.id,
            status="identified",
            message="A cut fibre.",
            eta=T0 + timedelta(hours=3),
            now=T0 + timedelta(minutes=30),
        )
    with transaction(engine) as s:
        service.resolve_incident(s, inc.id, message="Repaired.", now=T0 + timedelta(hours=2))
    rows = outbox(engine, inc.id)
    sent = [r for r in rows if r.status == "pending"]
    per_customer: dict[str, list] = defaultdict(list)
    for r in sent:
        per_customer[r.customer_id].append(r)
    # C03 withheld consent everywhere, C05 has no channel: suppressed, not sent
    assert set(per_customer) == {"C00", "C01", "C02", "C04"}
    for cid, msgs in per_customer.items():
        assert [m.payload["template"] for m in msgs] == [
            "incident_open",
            "incident_update",
            "incident_resolved",
        ]
        assert [m.payload["seq"] for m in msgs] == [0, 1, 2]
        assert {m.thread_key for m in msgs} == {f"incident:{inc.id}:{cid}"}
        assert all(m.priority == "critical" and m.topic == "outage" for m in msgs)
        assert msgs[0].idempotency_key == f"incident:{inc.id}:u0:{cid}:{msgs[0].channel}"
    # C01 prefers sms but refused it for outages: email; C04 refused email in general, allowed it for outages
    assert {per_customer["C01"][0].channel, per_customer["C04"][0].channel} == {"email"}
    assert per_customer["C01"][0].address == "c01@example.test"
    with transaction(engine) as s:
        assert service.get_incident(s, inc.id).resolved_at == T0 + timedelta(hours=2)


def test_consent_off_is_recorded_as_suppressed_with_reason(engine) -> None:
    with transaction(engine) as s:
        inc = service.open_incident(s, title="Down", services=["internet"], regions=["north"], now=T0)
    rows = {r.customer_id: r for r in outbox(engine, inc.id)}
    assert rows["C03"].status == "suppressed"
    assert "consent withheld" in rows["C03"].reason and "outage" in rows["C03"].reason
    assert rows["C05"].status == "suppressed" and rows["C05"].reason == "no contact channel on file"
    assert all(r.reason is None for cid, r in rows.items() if cid not in ("C03", "C05"))


def test_widening_catches_up_only_the_new_customers(engine) -> None:
    with transaction(engine) as s:
        inc = service.open_incident(s, title="Down", services=["internet"], regions=["north"], now=T0)
    with transaction(engine) as s:
        service.post_update(
            s, inc.id, status="identified", message="Cause found.", now=T0 + timedelta(minutes=20)
        )
    before = {r.idempotency_key for r in outbox(engine, inc.id)}
    with transaction(engine) as s:
        step = service.widen(
            s,
            inc.id,
            [service.Scope("internet", "south"), service.Scope("internet", "north")],
            now=T0 + timedelta(minutes=40),
        )
    assert step.newly_affected == 3
    new = [r for r in outbox(engine, inc.id) if r.idempotency_key not in before]
    assert sorted(r.customer_id for r in new) == ["C06", "C07", "C08"]
    # they get the latest status (update seq 1) as their first message in the thread
    assert {r.payload["seq"] for r in new} == {1}
    assert {r.payload["template"] for r in new} == {"incident_open"}
    # widening again is a no-op, and the next update reaches everybody exactly once
    with transaction(engine) as s:
        assert (
            service.widen(s, inc.id, [service.Scope("internet", "south")], now=T0 + timedelta(hours=1)).queued
            == 0
        )
        service.post_update(s, inc.id, message="Still working.", now=T0 + timedelta(hours=1))
    keys = Counter((r.customer_id, r.payload["seq"]) for r in outbox(engine, inc.id))
    assert max(keys.values()) == 1
    assert {cid for cid, seq in keys if seq == 2} == {f"C{i:02d}" for i in range(9)}


def test_fan_out_is_idempotent_and_machine_incidents_are_deduplicated(engine) -> None:
    from forewarn.incidents.notices import fan_out

    with transaction(engine) as s:
        a = service.open_incident(s, title="X", services=["internet"], external_key="monitor:web", now=T0)
        b = service.open_incident(
            s, title="X again", services=["internet"], external_key="monitor:web", now=T0
        )
        assert a.id == b.id
        assert fan_out(s, a.id, 0, template="incident_open", now=T0) == 0
    assert len(outbox(engine, a.id)) == 12


def test_a_customer_reached_twice_is_affected_once(engine) -> None:
    # C00 also takes internet in the south: an every-region incident, or one naming both regions, meets C00
    # twice (these are the computations that keep the conflict check)
    with transaction(engine) as s:
        s.add(Dependency(customer_id="C00", service_id="internet", region="south"))
    with transaction(engine) as s:
        everywhere = service.open_incident(s, title="Core down", services=["internet"], now=T0).id
        two = service.open_incident(
            s, title="Down", services=["internet"], regions=["north", "south"], now=T0
        ).id
    assert affected(engine, everywhere) == {f"C{i:02d}" for i in range(12)}
    assert affected(engine, two) == {f"C{i:02d}" for i in range(9)}
    for incident_id in (everywhere, two):
        assert Counter(r.customer_id for r in outbox(engine, incident_id))["C00"] == 1


def test_a_partial_step_is_completed_with_exactly_the_missing_notices(engine) -> None:
    # a step whose notices are partly there (the conflict-checked path) ends with the same rows as a fresh one
    from forewarn.incidents.notices import fan_out

    with transaction(engine) as s:
        inc = service.open_incident(s, title="Down", services=["internet"], now=T0)
    whole = {(r.idempotency_key, r.channel, r.address, r.status, r.reason) for r in outbox(engine, inc.id)}
    with transaction(engine) as s:
        s.execute(delete(OutboxMessage).where(OutboxMessage.customer_id.in_(["C01", "C03", "C08"])))
    with transaction(engine) as s:
        assert fan_out(s, inc.id, 0, template="incident_open", now=T0) == 3
    again = {(r.idempotency_key, r.channel, r.address, r.status, r.reason) for r in outbox(engine, inc.id)}
    assert again == whole and len(whole) == 12


def test_errors_are_clear(engine) -> None:
    with transaction(engine) as s, pytest.raises(service.IncidentError, match="unknown service"):
        service.open_incident(s, title="X", services=["nope"], now=T0)
    with transaction(engine) as s, pytest.raises(service.IncidentError, match="status 'broken'"):
        service.open_incident(s, title="X", services=["internet"], status="broken", now=T0)
    with transaction(engine) as s:
        inc = service.open_incident(s, title="X", services=["internet"], now=T0)
        service.resolve_incident(s, inc.id, now=T0 + timedelta(hours=1))
        with pytest.raises(service.IncidentError, match="resolved"):
            service.post_update(s, inc.id, message="late", now=T0 + timedelta(hours=2))


def test_metrics(engine) -> None:
    with transaction(engine) as s:
        inc = service.open_incident(
            s,
            title="Down",
            services=["internet"],
            regions=["north"],
            started_at=T0 - timedelta(minutes=10),
            now=T0,
        )
    with transaction(engine) as s:
        m = incident_metrics(s, inc.id, now=T0 + timedelta(minutes=5))
        assert affected_count(s, inc.id) == 6
    assert m.affected == 6
    assert m.notified == {"queued": 4, "sent": 0, "suppressed": 2, "dead": 0, "total": 6}
    assert m.time_to_first_queued_s["p50"] == 600.0
    assert m.time_to_first_delivered_s["n"] == 0


class Activity:
    """Who used the service when (an activity source as the signal store gives it), and what was asked."""

    def __init__(self, last_use: dict[str, timedelta]) -> None:
        self.last_use = {cid: T0 - ago for cid, ago in last_use.items()}
        self.asked: list[tuple] = []

    def __call__(self, start, end) -> list[str]:
        self.asked.append((start, end))
        return [cid for cid, t in self.last_use.items() if start <= t <= end]


def open_north_active_30_days(engine, activity: Activity):
    """An incident in the north counting only customers active in the 30 days before it started."""
    from forewarn.incidents.impact import ImpactFilter

    with transaction(engine) as s:
        return service.open_incident(
            s,
            title="Down",
            services=["internet"],
            regions=["north"],
            impact=ImpactFilter(active_days=30),
            activity=activity,
            now=T0,
        )


def test_widening_reuses_the_impact_filter_the_incident_was_opened_with(engine) -> None:
    # C06 used the service last week; C07 two months ago; C08 never: only C06 is affected in the south
    activity = Activity(
        {
            "C00": timedelta(days=2),
            "C02": timedelta(days=20),
            "C06": timedelta(days=6),
            "C07": timedelta(days=60),
            "C01": timedelta(days=45),
        }
    )
    inc = open_north_active_30_days(engine, activity)
    assert affected(engine, inc.id) == {"C00", "C02"}
    with transaction(engine) as s:
        assert service.get_incident(s, inc.id).impact_filter == {"active_days": 30}
        service.post_update(
            s, inc.id, status="identified", message="Cause found.", now=T0 + timedelta(hours=1)
        )
    before = {r.idempotency_key for r in outbox(engine, inc.id)}
    with transaction(engine) as s:
        step = service.widen(
            s, inc.id, [service.Scope("internet", "south")], activity=activity, now=T0 + timedelta(hours=2)
        )
    assert step.newly_affected == 1
    caught_up = [r for r in outbox(engine, inc.id) if r.idempotency_key not in before]
    assert [r.customer_id for r in caught_up] == ["C06"] and caught_up[0].payload["catch_up"]
    assert affected(engine, inc.id) == {"C00", "C02", "C06"}
    # the window is the one the incident was opened with (the 30 days before it started), not a new one
    assert set(activity.asked) == {(T0 - timedelta(days=30), T0)}
    # the next update reaches exactly the affected, filtered set
    with transaction(engine) as s:
        service.post_update(s, inc.id, message="Still working.", now=T0 + timedelta(hours=3))
    assert {r.customer_id for r in outbox(engine, inc.id) if r.payload["seq"] == 2} == {"C00", "C02", "C06"}


def test_a_filtered_incident_is_never_widened_without_its_filter(engine) -> None:
    from forewarn.incidents.impact import ImpactFilter

    activity = Activity({"C00": timedelta(days=1)})
    inc = open_north_active_30_days(engine, activity)
    with transaction(engine) as s, pytest.raises(service.IncidentError, match="active in the 30 days"):
        service.widen(s, inc.id, [service.Scope("internet", "south")], now=T0 + timedelta(hours=1))
    assert affected(engine, inc.id) == {"C00"}
    with transaction(engine) as s, pytest.raises(service.IncidentError, match="active_days"):
        service.open_incident(
            s, title="X", services=["internet"], impact=ImpactFilter(active_days=30), now=T0
        )


def test_api_widening_catches_up_only_recently_active_customers(store, headers_for) -> None:
    import polars as pl
    from fastapi.testclient import TestClient

    from forewarn.api.app import create_app

    api_ctx = store
    seed_isp(api_ctx.engine)
    days = {"C00": 2, "C02": 29, "C01": 40, "C06": 3, "C07": 50}  # C08 never used it
    api_ctx.signals.append(
        "usage",
        pl.DataFrame(
            {
                "event_id": [f"u-{c}" for c in days],
                "customer_id": list(days),
                "ts": [T0 - timedelta(days=d) for d in days.values()],
                "metric": ["data_gb"] * len(days),
                "value": [1.0] * len(days),
            }
        ),
    )
    with TestClient(create_app(api_ctx), headers=headers_for(api_ctx)) as c:
        body = {"title": "Down", "services": ["internet"], "regions": ["north"], "active_days": 30}
        inc = c.post("/v1/incidents", json={**body, "now": T0.isoformat()}).json()
        assert inc["affected"] == 2 and inc["impact_filter"] == {"active_days": 30}
        r = c.post(
            f"/v1/incidents/{inc['id']}/scopes",
            json={
                "regions": ["south"],
                "services": ["internet"],
                "now": (T0 + timedelta(hours=1)).isoformat(),
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["newly_affected"] == 1 and r.json()["incident"]["affected"] == 3
    assert [m.customer_id for m in outbox(api_ctx.engine, inc["id"]) if m.payload.get("catch_up")] == ["C06"]
