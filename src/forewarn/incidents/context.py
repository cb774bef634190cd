"""What incident templates see: the incident, the update a message belongs to and its ETA
(the renderer adds ``public_url``; templates link the status page from it).

Registered with the delivery renderer for templates named ``incident*`` (see ``register``), so notices are
rendered at delivery from ids in the outbox payload. Lookups are memoised per worker batch: a batch of a
thousand notices of one update reads the incident and the update once.

>>> STATUS_LABELS["monitoring"]
'fix applied, we are monitoring'
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from forewarn.state.models import Incident, IncidentUpdate, Service, Ticket

STATUS_LABELS = {
    "investigating": "we are investigating",
    "identified": "cause identified, we are working on a fix",
    "monitoring": "fix applied, we are monitoring",
    "resolved": "resolved",
}


def _cache(session: Session) -> dict[Any, Any]:
    try:
        from forewarn.deliver.render import batch_cache

        return batch_cache(session)
    except ImportError:  # pragma: no cover - the deliver package is part of forewarn
        return session.info.setdefault("forewarn_render_cache", {})


def incident_view(session: Session, incident_id: int) -> dict[str, Any]:
    """A plain dict of the incident for templates and the status page (services by name, regions joined)."""
    inc = session.get(Incident, incident_id)
    if inc is None:
        raise LookupError(f"incident {incident_id} no longer exists")
    names = dict(session.execute(select(Service.id, Service.name)).all())
    services = list(dict.fromkeys(s.service_id for s in inc.scopes))
    regions = [r for r in dict.fromkeys(s.region for s in inc.scopes) if r != "*"]
    return {
        "id": inc.id,
        "title": inc.title,
        "status": inc.status,
        "status_label": STATUS_LABELS.get(inc.status, inc.status),
        "severity": inc.severity,
        "source": inc.source,
        "public_message": inc.public_message,
        "started_at": inc.started_at,
        "resolved_at": inc.resolved_at,
        "eta": inc.eta,
        "services": services,
        "services_text": _join([names.get(s, s) for s in services]),
        "regions": regions,
        "regions_text": "" if any(s.region == "*" for s in inc.scopes) else _join(regions),
    }


def update_view(update: IncidentUpdate) -> dict[str, Any]:
    return {
        "seq": update.seq,
        "status": update.status,
        "status_label": STATUS_LABELS.get(update.status, update.status),
        "message": update.message,
        "eta": update.eta,
        "created_at": update.created_at,
    }


def _join(items: list[str]) -> str:
    """Items joined for a sentence.

    >>> _join(["a", "b", "c"])
    'a, b and c'
    """
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def incident_context(session: Session, message: Any) -> dict[str, Any]:
    """Context for one incident notice (``message`` is an ``OutboxMessage`` with ``payload.incident_id``)."""
    payload = message.payload or {}
    incident_id = int(payload.get("incident_id") or message.incident_id)
    seq = payload.get("seq")
    cache = _cache(session)
    key = ("incident", incident_id)
    if key not in cache:
        cache[key] = incident_view(session, incident_id)
    incident = cache[key]
    ukey = ("incident_update", incident_id, seq)
    if ukey not in cache:
        q = select(IncidentUpdate).where(IncidentUpdate.incident_id == incident_id)
        q = (
            q.where(IncidentUpdate.seq == int(seq))
            if seq is not None
            else q.order_by(IncidentUpdate.seq.desc())
        )
        upd = session.scalars(q.limit(1)).first()
        cache[ukey] = (
            update_view(upd)
            if upd
            else {
                "message": incident["public_message"],
                "status": incident["status"],
                "status_label": incident["status_label"],
                "seq": None,
                "eta": incident["eta"],
                "created_at": incident["started_at"],
            }
        )
    update = cache[ukey]
    context: dict[str, Any] = {
        "incident": incident,
        "update": update,
        "eta": update.get("eta") or incident.get("eta"),
    }
    if payload.get("ticket_id") or getattr(message, "ticket_id", None):
        ticket = session.get(Ticket, int(payload.get("ticket_id") or message.ticket_id))
        context["ticket"] = (
            {"id": ticket.id, "subject": ticket.subject, "opened_at": ticket.opened_at} if ticket else {}
        )
    else:
        context["ticket"] = {}
    return context


def register() -> None:
    """Make the delivery renderer call ``incident_context`` for every ``incident*`` template (idempotent)."""
    from forewarn.deliver.render import register_context

    register_context("incident", incident_context)
