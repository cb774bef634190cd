"""The reactive link: contacts from affected customers during an incident are linked and answered."""

from __future__ import annotations

from datetime import timedelta

from forewarn.incidents import service
from forewarn.incidents.link import link_tickets
from forewarn.incidents.metrics import incident_metrics
from forewarn.state.db import transaction
from forewarn.state.models import Ticket
from incident_helpers import T0, outbox, seed_isp


def add_tickets(engine, rows: list[tuple[str, str, str, timedelta]], prefix: str = "e") -> list[int]:
    with transaction(engine) as s:
        tickets = [
            Ticket(
                external_id=f"{prefix}{i}",
                customer_id=cid,
                channel=ch,
                subject="",
                text=text,
                opened_at=T0 + dt,
            )
            for i, (cid, ch, text, dt) in enumerate(rows)
        ]
        s.add_all(tickets)
        s.flush()
        return [t.id for t in tickets]


def test_link_and_reply(ctx) -> None:
    seed_isp(ctx.engine)
    with transaction(ctx.engine) as s:
        inc = service.open_incident(
            s, title="Internet outage", services=["internet"], regions=["north"], now=T0
        )
    ids = add_tickets(
        ctx.engine,
        [
            ("C00", "phone", "My internet is down, no signal on the router", timedelta(minutes=20)),  # linked
            ("C02", "email", "Question about my invoice", timedelta(minutes=25)),  # affected, other topic
            ("C06", "chat", "internet not working", timedelta(minutes=25)),  # not affected (south)
            ("C01", "phone", "no internet", timedelta(minutes=-30)),  # before the incident started
            ("C04", "phone", "", timedelta(minutes=40)),  # a call without notes from an affected customer
            (
                "C03",
                "web",
                "Still no connection!",
                timedelta(hours=1),
            ),  # linked; consent off -> reply suppressed
        ],
    )
    r = link_tickets(ctx, now=T0 + timedelta(hours=2))
    assert r.linked == 3 and r.by_incident == {inc.id: 3}
    with transaction(ctx.engine) as s:
        linked = {t.id: t.incident_id for t in s.query(Ticket)}
    assert [tid for tid in ids if linked[tid] == inc.id] == [ids[0], ids[4], ids[5]]
    replies = [m for m in outbox(ctx.engine, inc.id) if m.ticket_id is not None]
    assert {m.ticket_id: m.status for m in replies} == {
        ids[0]: "pending",
        ids[4]: "pending",
        ids[5]: "suppressed",
    }
    assert all(m.payload["template"] == "incident_reply" for m in replies)
    assert {m.thread_key for m in replies if m.ticket_id == ids[0]} == {f"incident:{inc.id}:C00"}
    # running it again links nothing new and sends no second reply
    again = link_tickets(ctx, now=T0 + timedelta(hours=2))
    assert again.linked == 0 and again.replied == 0

    # after resolution + grace, contacts are no longer linked
    with transaction(ctx.engine) as s:
        service.resolve_incident(s, inc.id, now=T0 + timedelta(hours=3))
    late = add_tickets(
        ctx.engine, [("C00", "phone", "internet down again", timedelta(hours=3 + 7))], prefix="late"
    )
    assert link_tickets(ctx, ticket_ids=late, now=T0 + timedelta(hours=11)).linked == 0
    with transaction(ctx.engine) as s:
        m = incident_metrics(s, inc.id, now=T0 + timedelta(hours=11))
    assert m.tickets_linked == 3 and m.auto_replies == 3
    # every contact from an affected customer came before any notice was delivered (none was sent here)
    assert m.contacts_during == 4 and m.contacts_before_notice == 4


def test_a_contact_too_old_to_answer_is_linked_and_its_reply_recorded_as_suppressed(ctx) -> None:
    seed_isp(ctx.engine)
    with transaction(ctx.engine) as s:
        inc = service.open_incident(
            s, title="Internet outage", services=["internet"], regions=["north"], now=T0
        )
    old, fresh = add_tickets(
        ctx.engine,
        [
            ("C00", "phone", "no internet since this morning", timedelta(minutes=10)),
            ("C04", "phone", "internet down", timedelta(hours=5)),
        ],
    )
    r = link_tickets(ctx, now=T0 + timedelta(hours=6), reply_max_age=timedelta(hours=3))
    assert r.linked == 2
    replies = {m.ticket_id: m for m in outbox(ctx.engine, inc.id) if m.ticket_id is not None}
    assert replies[fresh].status == "pending"
    assert replies[old].status == "suppressed" and replies[old].reason.startswith("too old to answer")
