"""The reactive link: an inbound contact from an affected customer during an incident is linked to it and
answered with the incident's status through the same outbox.

A ticket is a candidate for an incident when its customer is among the incident's affected customers and
it was opened between the incident's ``started_at`` and ``resolved_at + grace`` (still open: up to ``now``).
Among candidates the words decide (:func:`text_score`): outage phrases ("internet down", "no signal",
"not working"), the incident's service names and title words raise the score; words of other topics
(billing, moving house) lower it; a ticket topic ``outage`` counts in favour. An affected customer's contact
with no text at all (a call with no notes) is linked: during an outage that is what most of them are about.

Linked tickets get ``ticket.incident_id`` and one auto-reply (template ``incident_reply``) in the customer's
incident thread, keyed ``incident:<id>:reply:<ticket_id>`` so re-running the link sends nothing twice.

>>> round(text_score("My internet is down since this morning", {"internet"}, None), 2)
0.9
>>> round(text_score("Question about my invoice", {"internet"}, None), 2)
0.0
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from forewarn.deliver import consent
from forewarn.deliver.channels.base import channel_spec
from forewarn.incidents.notices import TEMPLATE_REPLY, TOPIC, priority_for, thread_key
from forewarn.state.db import transaction
from forewarn.state.models import (
    AffectedCustomer,
    Customer,
    Incident,
    IncidentScope,
    Service,
    Ticket,
)
from forewarn.timeutil import utc

if TYPE_CHECKING:
    from forewarn.context import Context

DEFAULT_GRACE = timedelta(hours=6)
THRESHOLD = 0.5

OUTAGE_PHRASES = (
    "internet down",
    "internet is down",
    "no internet",
    "no signal",
    "no service",
    "no connection",
    "not working",
    "doesn't work",
    "does not work",
    "stopped working",
    "can't connect",
    "cannot connect",
    "can not connect",
    "offline",
    "outage",
    "disconnected",
    "keeps dropping",
    "no dial tone",
    "down again",
    "is down",
    "went down",
    "no network",
    "no coverage",
    "very slow",
    "storing",
    "panne",
    "störung",
)
OUTAGE_WORDS = {
    "down",
    "outage",
    "offline",
    "signal",
    "connection",
    "connectivity",
    "wifi",
    "router",
    "modem",
    "broken",
    "dead",
    "slow",
    "interrupted",
    "unavailable",
    "error",
    "failure",
    "blackout",
}
OTHER_TOPIC_WORDS = {
    "invoice",
    "bill",
    "billing",
    "refund",
    "charge",
    "charged",
    "payment",
    "cancel",
    "cancellation",
    "contract",
    "upgrade",
    "moving",
    "address",
    "password",
    "discount",
    "offer",
}
STOP = {
    "the",
    "and",
    "for",
    "with",
    "from",
    "this",
    "that",
    "your",
    "our",
    "are",
    "was",
    "has",
    "have",
    "in",
    "on",
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-zà-ÿ0-9]+", text.lower()))


def text_score(text: str, terms: Iterable[str], topic: str | None) -> float:
    """How much a contact's words say it is about this incident, 0..1 (``terms``: service and title words)."""
    low = text.lower()
    words = _words(low)
    score = 0.0
    if any(p in low for p in OUTAGE_PHRASES):
        score += 0.5
    elif words & OUTAGE_WORDS:
        score += 0.3
    if words & {t.lower() for t in terms}:
        score += 0.4
    if topic == "outage":
        score += 0.5
    elif topic:
        score -= 0.3
    if words & OTHER_TOPIC_WORDS:
        score -= 0.4
    return max(0.0, min(1.0, score))


@dataclass(frozen=True)
class LinkResult:
    examined: int
    linked: int
    replied: int
    by_incident: dict[int, int]


def _terms(session: Session, incident: Incident) -> set[str]:
    services = session.scalars(
        select(IncidentScope.service_id).where(IncidentScope.incident_id == incident.id)
    )
    ids = set(services)
    names = session.scalars(select(Service.name).where(Service.id.in_(ids)))
    words: set[str] = set()
    for t in [*ids, *names, incident.title]:
        words |= {w for w in _words(t) if len(w) > 2 and w not in STOP}
    return words


def _reply_channel(
    session: Session, customer: Customer, explicit: Collection[str]
) -> tuple[str, str | None, str | None]:
    """(channel, address, suppression reason) for the auto-reply, by the same rules as the notices: the first
    preferred channel consent allows (:mod:`forewarn.deliver.consent`) with an address where it needs one."""
    rules = consent.load_rules(session, [customer.id]).get(customer.id, {})
    channels = list(customer.channels or [])
    for ch in channels:
        spec = channel_spec(ch)
        needs_consent = spec is None or spec.needs_consent
        allowed = not needs_consent or consent.allows(rules, ch, TOPIC, explicit)
        column = spec.address_field if spec is not None else None
        address = getattr(customer, column) if column else None
        if allowed and (column is None or address):
            return ch, address, None
    if not channels:
        return "none", None, "no contact channel on file"
    return channels[0], None, f"consent withheld or no address for topic {TOPIC} on every preferred channel"


def link_in_session(
    session: Session,
    ticket_ids: Sequence[int] | None = None,
    *,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    threshold: float = THRESHOLD,
    reply: bool = True,
    reply_max_age: timedelta | None = None,
    explicit: Collection[str] = consent.EXPLICIT_TOPICS,
) -> LinkResult:
    """:func:`link_tickets` inside the caller's transaction (``explicit``: the topics that need an opt-in)."""
    now = utc(now)
    too_old = None if reply_max_age is None else now - reply_max_age
    q = (
        select(Ticket, Incident)
        .join(AffectedCustomer, AffectedCustomer.customer_id == Ticket.customer_id)
        .join(Incident, Incident.id == AffectedCustomer.incident_id)
        .where(
            Ticket.incident_id.is_(None),
            Ticket.opened_at >= Incident.started_at,
            Ticket.opened_at <= now,
            Incident.created_at <= now,  # point in time: only incidents known at ``now``
        )
        .order_by(Ticket.id, Incident.started_at.desc())
    )
    if ticket_ids is not None:
        q = q.where(Ticket.id.in_(list(ticket_ids)))
    best: dict[int, tuple[float, Ticket, Incident]] = {}
    terms_cache: dict[int, set[str]] = {}
    examined: set[int] = set()
    for ticket, incident in session.execute(q).all():
        examined.add(ticket.id)
        if incident.resolved_at is not None and ticket.opened_at > incident.resolved_at + grace:
            continue
        if incident.id not in terms_cache:
            terms_cache[incident.id] = _terms(session, incident)
        text = f"{ticket.subject or ''} {ticket.text or ''}".strip()
        score = (
            0.6 if not text and not ticket.topic else text_score(text, terms_cache[incident.id], ticket.topic)
        )
        if score >= threshold and (ticket.id not in best or score > best[ticket.id][0]):
            best[ticket.id] = (score, ticket, incident)
    by_incident: dict[int, int] = {}
    messages: list[dict[str, Any]] = []
    for score, ticket, incident in best.values():
        ticket.incident_id = incident.id
        by_incident[incident.id] = by_incident.get(incident.id, 0) + 1
        if reply:
            customer = session.get(Customer, ticket.customer_id)
            channel, address, reason = _reply_channel(session, customer, explicit)
            if too_old is not None and utc(ticket.opened_at) < too_old:
                # linked for the record, but an answer this late would only confuse
                reason = f"too old to answer: contact opened {utc(ticket.opened_at):%Y-%m-%d %H:%M} UTC"
            messages.append(
                {
                    "idempotency_key": f"incident:{incident.id}:reply:{ticket.id}",
                    "customer_id": ticket.customer_id,
                    "channel": channel,
                    "address": address,
                    "topic": TOPIC,
                    "thread_key": thread_key(incident.id, ticket.customer_id),
                    "priority": priority_for(incident.severity),
                    "payload": {
                        "template": TEMPLATE_REPLY,
                        "incident_id": incident.id,
                        "ticket_id": ticket.id,
                        "link_score": round(score, 2),
                    },
                    "status": "suppressed" if reason else "pending",
                    "reason": reason,
                    "incident_id": incident.id,
                    "ticket_id": ticket.id,
                }
            )
    session.flush()
    replied = 0
    if messages:
        from forewarn.deliver.outbox import enqueue

        replied = enqueue(session, messages, now=now)
    return LinkResult(len(examined), len(best), replied, by_incident)


def link_tickets(
    ctx: Context,
    ticket_ids: Sequence[int] | None = None,
    now: datetime | None = None,
    *,
    grace: timedelta = DEFAULT_GRACE,
    threshold: float = THRESHOLD,
    reply_max_age: timedelta | None = None,
) -> LinkResult:
    """Link unlinked tickets (all, or ``ticket_ids``) to the incident that explains them; auto-reply; count.

    ``now`` is the event time: only tickets opened and incidents created by then are considered.
    ``reply_max_age``: contacts older than this at ``now`` are linked, and their reply recorded as suppressed.
    """
    with transaction(ctx.engine) as s:
        return link_in_session(
            s,
            ticket_ids,
            now=now,
            grace=grace,
            threshold=threshold,
            reply_max_age=reply_max_age,
            explicit=consent.explicit_topics(ctx.settings),
        )


__all__ = ["LinkResult", "link_in_session", "link_tickets", "text_score"]
