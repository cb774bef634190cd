"""The public status page's data: per public service, its current incidents and recent past ones.

>>> SERVICE_STATE["critical"]
'major outage'
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from forewarn.incidents.context import STATUS_LABELS
from forewarn.state.models import Incident, IncidentScope, Service
from forewarn.timeutil import utc

SERVICE_STATE = {"critical": "major outage", "major": "partial outage", "minor": "degraded performance"}
RANK = {"operational": 0, "degraded performance": 1, "partial outage": 2, "major outage": 3}


def _incident(inc: Incident, service_id: str) -> dict[str, Any]:
    regions = sorted({s.region for s in inc.scopes if s.service_id == service_id})
    return {
        "id": inc.id,
        "title": inc.title,
        "status": inc.status,
        "status_label": STATUS_LABELS.get(inc.status, inc.status),
        "severity": inc.severity,
        "regions": ["all regions"] if "*" in regions else regions,
        "started_at": inc.started_at.isoformat(),
        "resolved_at": inc.resolved_at.isoformat() if inc.resolved_at else None,
        "eta": inc.eta.isoformat() if inc.eta else None,
        "updates": [
            {"seq": u.seq, "status": u.status, "message": u.message, "at": u.created_at.isoformat()}
            for u in sorted(inc.updates, key=lambda u: -u.seq)
        ],
    }


def status_data(
    session: Session, service_id: str | None = None, *, days: int = 90, now: datetime | None = None
) -> dict[str, Any]:
    """Public services with their state, current incidents and incidents resolved in the last ``days``.

    Raises ``LookupError`` for an unknown or non-public ``service_id``.
    """
    now = utc(now)
    q = select(Service).where(Service.public.is_(True)).order_by(Service.name)
    if service_id is not None:
        q = q.where(Service.id == service_id)
    services = list(session.scalars(q))
    if service_id is not None and not services:
        raise LookupError(f"no public service {service_id!r}")
    ids = [s.id for s in services]
    since = now - timedelta(days=days)
    incidents = session.scalars(
        select(Incident)
        .join(IncidentScope, IncidentScope.incident_id == Incident.id)
        .where(IncidentScope.service_id.in_(ids), Incident.started_at <= now)
        .where((Incident.resolved_at.is_(None)) | (Incident.resolved_at >= since))
        .options(selectinload(Incident.scopes), selectinload(Incident.updates))
        .order_by(Incident.started_at.desc())
        .distinct()
    ).all()
    out = []
    for svc in services:
        mine = [i for i in incidents if any(s.service_id == svc.id for s in i.scopes)]
        # "current" is judged at ``now``: an incident resolved later is still current in a replayed history
        current = [i for i in mine if i.resolved_at is None or i.resolved_at > now]
        past = [i for i in mine if i not in current]
        state = max(
            (SERVICE_STATE.get(i.severity, "degraded performance") for i in current),
            key=RANK.get,
            default="operational",
        )
        out.append(
            {
                "id": svc.id,
                "name": svc.name,
                "description": svc.description,
                "state": state,
                "current": [_incident(i, svc.id) for i in current],
                "past": [_incident(i, svc.id) for i in past],
            }
        )
    overall = max((s["state"] for s in out), key=RANK.get, default="operational")
    return {"generated_at": now.isoformat(), "overall": overall, "days": days, "services": out}
