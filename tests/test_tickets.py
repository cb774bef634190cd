"""Ticket lifecycle: a contact's case closes on a ``ticket_update`` signal, an API call or after an idle time,
and live guardrails and backtests read one definition of an open case; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from forewarn.api.app import create_app
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.decide.engine import customer_views
from forewarn.signals.ingest import ingest_records
from forewarn.state.db import transaction
from forewarn.state.models import Ticket
from forewarn.state.tickets import CaseHistory, close_idle_tickets

T = datetime(2026, 3, 2, 10, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def contact(ctx: Context, event_id: str, customer: str, ts: datetime, topic: str = "usage") -> None:
    rec = {
        "event_id": event_id,
        "customer_id": customer,
        "ts": ts.isoformat(),
        "channel": "phone",
        "topic": topic,
    }
    assert ingest_records(ctx, "contact", [rec]).new == 1


def update_record(event_id: str, ticket: str, customer: str, ts: datetime, status: str) -> dict:
    return {
        "event_id": event_id,
        "ticket_id": ticket,
        "customer_id": customer,
        "ts": ts.isoformat(),
        "status": status,
    }


def update(ctx: Context, event_id: str, ticket: str, customer: str, ts: datetime, status: str) -> int:
    report = ingest_records(ctx, "ticket_update", [update_record(event_id, ticket, customer, ts, status)])
    assert report.rejected == 0, report.sources[0].errors
    return report.new


def open_topics(ctx: Context, customer: str, at: datetime) -> frozenset[str]:
    with transaction(ctx.engine) as s:
        views, _, _ = customer_views(s, [customer], at)
    return views[customer].open_ticket_topics


def ticket(ctx: Context, external_id: str) -> tuple:
    with transaction(ctx.engine) as s:
        t = s.scalars(select(Ticket).where(Ticket.external_id == external_id)).one()
        return (t.status, t.closed_at, t.last_activity_at)


def test_a_contact_no_longer_suppresses_its_topic_forever(store: Context) -> None:
    contact(store, "k1", "C1", T)
    assert open_topics(store, "C1", T + H) == {"usage"}
    assert open_topics(store, "C1", T + 6 * D) == {"usage"}
    # seven days without activity (the default idle time) close the case
    assert open_topics(store, "C1", T + 7 * D + H) == frozenset()
    # the live loop's sweep records it, at the time the case went idle; a second sweep changes nothing
    with transaction(store.engine) as s:
        assert close_idle_tickets(s, now=T + 8 * D, idle=timedelta(days=7)) == 1
    with transaction(store.engine) as s:
        assert close_idle_tickets(s, now=T + 9 * D, idle=timedelta(days=7)) == 0
    assert ticket(store, "k1")[:2] == ("closed", T + 7 * D)


def test_the_idle_time_is_a_setting(store: Context, tmp_path: Path) -> None:
    contact(store, "k1", "C1", T)
    with transaction(store.engine) as s:
        views, _, _ = customer_views(s, ["C1"], T + 2 * D, case_idle=timedelta(days=1))
    assert views["C1"].open_ticket_topics == frozenset()
    assert Settings(home=tmp_path, ticket_idle_close="3d").ticket_idle_close == timedelta(days=3)
    assert Settings(home=tmp_path).ticket_idle_close == timedelta(days=7)


def test_ticket_update_closes_and_reopens_and_resending_changes_nothing(store: Context) -> None:
    contact(store, "k1", "C1", T)
    contact(store, "k2", "C1", T + H, topic="billing")
    assert open_topics(store, "C1", T + 2 * H) == {"usage", "billing"}
    assert update(store, "u1", "k1", "C1", T + D, "solved") == 1
    assert open_topics(store, "C1", T + D + H) == {"billing"}
    before = ticket(store, "k1")
    assert before[:2] == ("solved", T + D)
    # the same webhook again: stored once, applied once
    assert update(store, "u1", "k1", "C1", T + D, "solved") == 0
    assert ticket(store, "k1") == before
    # the customer writes back: reopened; a late-arriving older update does not undo it
    assert update(store, "u2", "k1", "C1", T + 2 * D, "open") == 1
    assert update(store, "u0", "k1", "C1", T + 12 * H, "closed") == 1
    assert ticket(store, "k1")[0] == "open"
    assert open_topics(store, "C1", T + 2 * D + H) == {"usage", "billing"}
    # pending (waiting for the customer) is still an open case; activity restarts the idle clock
    assert update(store, "u3", "k1", "C1", T + 8 * D, "pending") == 1
    assert open_topics(store, "C1", T + 9 * D) == {"usage"}


def test_a_bad_ticket_update_is_named_and_nothing_is_applied(store: Context) -> None:
    contact(store, "k1", "C1", T)
    report = ingest_records(store, "ticket_update", [update_record("u1", "k1", "C1", T + D, "done")])
    [err] = report.sources[0].errors
    assert report.rejected == 1 and err.field == "status" and "solved" in err.expected
    assert ticket(store, "k1")[0] == "open"
    # an update naming no known ticket is kept in the signal store and reported
    report = ingest_records(store, "ticket_update", [update_record("u2", "nope", "C1", T + D, "solved")])
    assert report.new == 1 and "no known ticket" in (report.sources[0].note or "")
    # ... and applied when its contact arrives (a helpdesk's webhooks need not come in order)
    contact(store, "nope", "C1", T)
    assert ticket(store, "nope")[:2] == ("solved", T + D)


def test_api_closes_and_reopens_a_ticket(store: Context, headers_for) -> None:
    contact(store, "k1", "C1", T)
    with transaction(store.engine) as s:
        tid = s.scalars(select(Ticket.id).where(Ticket.external_id == "k1")).one()
    with TestClient(create_app(store), headers=headers_for(store)) as c:
        r = c.post(f"/v1/tickets/{tid}/close", json={"at": (T + D).isoformat()})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "closed" and r.json()["open"] is False and r.json()["changed"]
        # closing again changes nothing
        again = c.post(f"/v1/tickets/{tid}/close", json={"at": (T + 2 * D).isoformat()}).json()
        assert again["changed"] is False and again["closed_at"] == r.json()["closed_at"]
        r = c.patch(f"/v1/tickets/{tid}", json={"status": "open", "at": (T + 3 * D).isoformat()})
        assert r.status_code == 200 and r.json()["status"] == "open" and r.json()["open"] is True
        assert c.patch(f"/v1/tickets/{tid}", json={"status": "done"}).status_code == 422
        assert c.post("/v1/tickets/99999/close").status_code == 404
        assert c.get(f"/v1/tickets/{tid}").json()["external_id"] == "k1"
    # the API's changes are ticket_update signals too, so a backtest of this history sees them
    updates = store.signals.read("ticket_update")
    assert updates.sort("ts")["status"].to_list() == ["closed", "open"]


SCENARIO = [
    # (at, kind, event_id, customer, ticket/topic, status)
    (T, "contact", "a1", "A", "usage", None),
    (T + 2 * H, "contact", "a2", "A", "billing", None),
    (T + 5 * H, "ticket_update", "ua1", "A", "a1", "solved"),
    (T + D, "contact", "b1", "B", "device", None),
    (T + D + 3 * H, "ticket_update", "ub1", "B", "b1", "pending"),
    (T + 3 * D, "ticket_update", "ua2", "A", "a1", "open"),
    (T + 4 * D, "ticket_update", "ua3", "A", "a1", "closed"),
    (T + 4 * D, "ticket_update", "ua4", "A", "a1", "pending"),  # same time: the closing status wins
    (T + 6 * D, "contact", "c1", "C", "usage", None),
    (T + 9 * D, "ticket_update", "uc1", "C", "c1", "closed"),
    (T + 10 * D, "ticket_update", "ub2", "B", "b1", "solved"),
]


def test_live_and_backtest_read_one_definition_of_an_open_case(store: Context) -> None:
    # the live store takes the events as they happen; at every hour in between, what it calls open must be
    # what the backtest's history calls open at that time (point in time)
    contacts = [e for e in SCENARIO if e[1] == "contact"]
    updates = [e for e in SCENARIO if e[1] == "ticket_update"]
    frames = {
        "contact": pl.DataFrame(
            {
                "event_id": [e[2] for e in contacts],
                "customer_id": [e[3] for e in contacts],
                "ts": [e[0] for e in contacts],
                "topic": [e[4] for e in contacts],
            }
        ),
        "ticket_update": pl.DataFrame(
            {
                "event_id": [e[2] for e in updates],
                "customer_id": [e[3] for e in updates],
                "ts": [e[0] for e in updates],
                "ticket_id": [e[4] for e in updates],
                "status": [e[5] for e in updates],
            }
        ),
    }
    history = CaseHistory.from_frames(frames["contact"], frames["ticket_update"])
    idle = timedelta(days=7)
    checked = 0
    for i, (at, kind, event_id, cid, ref, status) in enumerate(SCENARIO):
        if kind == "contact":
            contact(store, event_id, cid, at, topic=ref)
        else:
            update(store, event_id, ref, cid, at, status)
        until = SCENARIO[i + 1][0] if i + 1 < len(SCENARIO) else at + 10 * D
        t = at
        while t < until:
            for customer in ("A", "B", "C"):
                live = open_topics(store, customer, t) if customer in _known(store) else frozenset()
                assert live == history.open_topics(customer, t, idle), (customer, t)
                checked += 1
            t += 6 * H
    assert checked > 100
    # spot checks of the definition itself
    assert history.open_topics("A", T + 3 * H, idle) == {"usage", "billing"}
    assert history.open_topics("A", T + 6 * H, idle) == {"billing"}
    assert history.open_topics("A", T + 3 * D + H, idle) == {"usage", "billing"}
    assert history.open_topics("A", T + 4 * D + H, idle) == {"billing"}  # usage closed (closing wins the tie)
    assert history.open_topics("A", T + 7 * D + 3 * H, idle) == frozenset()  # billing went idle
    assert history.open_topics("B", T + 8 * D, idle) == {"device"}  # pending is open; activity at D+3h
    assert history.open_topics("B", T + 8 * D + 3 * H, idle) == frozenset()


def _known(ctx: Context) -> set[str]:
    with transaction(ctx.engine) as s:
        return set(s.scalars(select(Ticket.customer_id)))


def test_the_idle_sweep_closes_any_number_of_tickets_in_chunks(
    store: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    import forewarn.state.tickets as tickets

    monkeypatch.setattr(tickets, "CHUNK", 2)
    for i in range(5):
        contact(store, f"k{i}", f"C{i}", T + i * H)
    contact(store, "fresh", "C9", T + 7 * D)
    with transaction(store.engine) as s:
        assert close_idle_tickets(s, now=T + 7 * D + 5 * H, idle=timedelta(days=7)) == 5
    assert [ticket(store, f"k{i}")[1] for i in range(5)] == [T + 7 * D + i * H for i in range(5)]
    assert ticket(store, "fresh")[0] == "open"
