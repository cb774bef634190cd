"""Per-incident metrics: who was affected, who was told and how fast, and who still had to contact us.

- ``affected``; ``notified`` by outbox status (queued = pending/sending/failed/deferred/held, sent,
  suppressed, dead) over the incident's notices (auto-replies to tickets are counted apart);
- time from the incident's start to each affected customer's first notice *queued* and first *delivered*
  (p50, p95 in seconds, over customers who have one);
- inbound contacts (tickets) from affected customers during the incident (start .. resolved + grace), split
  into before and after that customer's first delivered notice (no delivered notice counts as before);
- (contacts avoided against a no-notice baseline need ground truth: ``forewarn.measure.truth.contacts_avoided``).

>>> percentiles([1.0, 2.0, 3.0, 4.0])
{'p50': 2.5, 'p95': 3.85, 'n': 4}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from forewarn.incidents.service import get_incident
from forewarn.state.models import AffectedCustomer, OutboxMessage, Ticket
from forewarn.timeutil import utc

QUEUED = ("pending", "sending", "failed", "deferred", "held")
DEFAULT_GRACE = timedelta(hours=6)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "n": len(values),
    }


@dataclass
class IncidentMetrics:
    incident_id: int
    status: str
    started_at: datetime
    resolved_at: datetime | None
    affected: int
    notified: dict[str, int]
    customers_notified: int
    time_to_first_queued_s: dict[str, Any]
    time_to_first_delivered_s: dict[str, Any]
    contacts_during: int
    contacts_before_notice: int
    contacts_after_notice: int
    tickets_linked: int
    auto_replies: int
    contacts_avoided: dict[str, Any] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["started_at"] = self.started_at.isoformat()
        d["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        return d


def incident_metrics(
    session: Session,
    incident_id: int,
    *,
    grace: timedelta = DEFAULT_GRACE,
    now: datetime | None = None,
) -> IncidentMetrics:
    """Compute the metrics of one incident from the state store (no simulator needed)."""
    now = utc(now)
    inc = get_incident(session, incident_id)
    notices = and_(OutboxMessage.incident_id == incident_id, OutboxMessage.ticket_id.is_(None))
    by_status = dict(
        session.execute(
            select(OutboxMessage.status, func.count()).where(notices).group_by(OutboxMessage.status)
        ).all()
    )
    notified = {
        "queued": sum(by_status.get(s, 0) for s in QUEUED),
        "sent": by_status.get("sent", 0),
        "suppressed": by_status.get("suppressed", 0),
        "dead": by_status.get("dead", 0),
        "total": sum(by_status.values()),
    }
    affected = session.scalar(
        select(func.count()).select_from(AffectedCustomer).where(AffectedCustomer.incident_id == incident_id)
    )
    started = inc.started_at
    firsts = session.execute(
        select(OutboxMessage.customer_id, func.min(OutboxMessage.created_at), func.min(OutboxMessage.sent_at))
        .where(notices, OutboxMessage.status != "suppressed")
        .group_by(OutboxMessage.customer_id)
    ).all()
    queued_s = [(q - started).total_seconds() for _, q, _ in firsts if q is not None]
    delivered_s = [(d - started).total_seconds() for _, _, d in firsts if d is not None]
    first_delivered = {cid: d for cid, _, d in firsts if d is not None}

    end = (inc.resolved_at or now) + grace
    contacts = session.execute(
        select(Ticket.customer_id, Ticket.opened_at, Ticket.incident_id)
        .join(
            AffectedCustomer,
            and_(
                AffectedCustomer.customer_id == Ticket.customer_id,
                AffectedCustomer.incident_id == incident_id,
            ),
        )
        .where(Ticket.opened_at >= started, Ticket.opened_at <= end)
    ).all()
    before = sum(
        1 for cid, opened, _ in contacts if cid not in first_delivered or opened < first_delivered[cid]
    )
    linked = session.scalar(select(func.count()).select_from(Ticket).where(Ticket.incident_id == incident_id))
    replies = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.incident_id == incident_id,
            or_(OutboxMessage.ticket_id.is_not(None)),
        )
    )
    return IncidentMetrics(
        incident_id=incident_id,
        status=inc.status,
        started_at=started,
        resolved_at=inc.resolved_at,
        affected=int(affected or 0),
        notified=notified,
        customers_notified=len(firsts),
        time_to_first_queued_s=percentiles(queued_s),
        time_to_first_delivered_s=percentiles(delivered_s),
        contacts_during=len(contacts),
        contacts_before_notice=before,
        contacts_after_notice=len(contacts) - before,
        tickets_linked=int(linked or 0),
        auto_replies=int(replies or 0),
    )
