"""Opening, updating, widening and resolving incidents; each public step queues its notices in the same
transaction.

Every function takes ``now`` (the event time, default the wall clock in UTC) so that a simulated history can
be replayed with its own clock. Functions work inside the caller's session and do not commit: the incident,
its affected customers and its outbox rows are written whole or not at all
(``forewarn.state.db.transaction``).

>>> import tempfile
>>> from datetime import datetime, UTC
>>> from forewarn.state.db import upgrade, open_store, transaction
>>> from forewarn.state.models import Customer, Dependency, Service
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"; upgrade(url); engine = open_store(url)
>>> with transaction(engine) as s:
...     s.add_all([Service(id="internet", name="Internet"),
...                Customer(id="C1", channels=["email"], email="a@x")])
...     s.flush(); s.add(Dependency(customer_id="C1", service_id="internet", region="north"))
>>> t0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
>>> with transaction(engine) as s:
...     inc = open_incident(s, title="Internet down", services=["internet"], regions=["north"], now=t0)
...     _ = post_update(s, inc.id, status="resolved", message="Fixed.", now=t0.replace(hour=10))
>>> with transaction(engine) as s:
...     get_incident(s, inc.id).status
'resolved'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from forewarn.incidents.impact import Activity, ImpactFilter, compute_affected
from forewarn.incidents.notices import TEMPLATE_OPEN, fan_out, template_for
from forewarn.state.models import Incident, IncidentScope, IncidentUpdate, Service
from forewarn.timeutil import utc

STATUSES = ("investigating", "identified", "monitoring", "resolved")
SEVERITIES = ("minor", "major", "critical")


class IncidentError(ValueError):
    """A request about an incident that cannot be carried out (unknown id, bad status, closed incident...)."""


@dataclass(frozen=True)
class Scope:
    """A service in a region (``*`` = every region)."""

    service_id: str
    region: str = "*"


@dataclass(frozen=True)
class StepResult:
    """What one step did: the update's seq, newly affected customers, outbox rows queued."""

    incident_id: int
    seq: int | None
    newly_affected: int
    queued: int


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise IncidentError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    return status


def _check_severity(severity: str) -> str:
    if severity not in SEVERITIES:
        raise IncidentError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    return severity


def scopes_of(services: Iterable[str], regions: Iterable[str] | None = None) -> list[Scope]:
    """Every service in every region (``["*"]`` when no regions are named).

    >>> scopes_of(["tv"], ["north", "south"])
    [Scope(service_id='tv', region='north'), Scope(service_id='tv', region='south')]
    """
    regs = list(regions or []) or ["*"]
    return [Scope(s, r) for s in dict.fromkeys(services) for r in dict.fromkeys(regs)]


def ensure_services(session: Session, service_ids: Iterable[str], *, create: bool) -> None:
    """Check the services exist; create unknown ones (named by their id) when ``create``."""
    wanted = set(service_ids)
    known = set(session.scalars(select(Service.id).where(Service.id.in_(wanted))))
    missing = sorted(wanted - known)
    if missing and not create:
        raise IncidentError(f"unknown service(s): {', '.join(missing)}; add them to the services table first")
    for sid in missing:
        session.add(Service(id=sid, name=sid))
    if missing:
        session.flush()


def get_incident(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentError(f"no incident with id {incident_id}")
    return incident


def find_by_key(session: Session, external_key: str) -> Incident | None:
    return session.scalars(select(Incident).where(Incident.external_key == external_key)).first()


def open_incident(
    session: Session,
    *,
    title: str,
    services: Sequence[str] = (),
    regions: Sequence[str] | None = None,
    scopes: Sequence[Scope] | None = None,
    message: str | None = None,
    status: str = "investigating",
    severity: str = "major",
    eta: datetime | None = None,
    source: str = "api",
    external_key: str | None = None,
    started_at: datetime | None = None,
    impact: ImpactFilter | None = None,
    activity: Activity | None = None,
    create_services: bool = False,
    now: datetime | None = None,
) -> Incident:
    """Open an incident, compute who it affects and queue the opening notice for each of them.

    With ``external_key`` (an Alertmanager group, a monitor, a detector) an open incident with that key is
    returned unchanged instead: replays are idempotent. ``started_at`` defaults to ``now``. ``impact`` (e.g.
    only customers active in the 30 days before the start) is stored with the incident and applied again by
    every widening; a filter on activity needs ``activity`` (``impact.usage_activity(ctx)``).
    """
    now = utc(now)
    _check_status(status)
    _check_severity(severity)
    impact = impact or ImpactFilter()
    _require_activity(impact, activity)
    if status == "resolved":
        raise IncidentError("an incident cannot be opened as resolved")
    scope_list = list(scopes) if scopes else scopes_of(services, regions)
    if not scope_list:
        raise IncidentError("an incident needs at least one service")
    if external_key:
        existing = find_by_key(session, external_key)
        if existing is not None:
            if existing.status != "resolved":
                return existing
            # the key is reused for a new episode; keep the old one findable under a suffixed key
            existing.external_key = f"{external_key}#{existing.id}"
            session.flush()
    ensure_services(session, {s.service_id for s in scope_list}, create=create_services)
    message = message or title
    incident = Incident(
        external_key=external_key,
        title=title,
        status=status,
        severity=severity,
        source=source,
        public_message=message,
        eta=utc(eta) if eta else None,
        started_at=utc(started_at) if started_at else now,
        impact_filter=impact.as_json(),
        created_at=now,
        updated_at=now,
    )
    session.add(incident)
    session.flush()
    for sc in dict.fromkeys(scope_list):
        session.add(
            IncidentScope(incident_id=incident.id, service_id=sc.service_id, region=sc.region, added_at=now)
        )
    session.add(
        IncidentUpdate(
            incident_id=incident.id, seq=0, status=status, message=message, eta=incident.eta, created_at=now
        )
    )
    session.flush()
    _compute_affected(session, incident, activity, now)
    fan_out(session, incident.id, 0, template=TEMPLATE_OPEN, severity=severity, now=now)
    return incident


def _require_activity(
    impact: ImpactFilter, activity: Activity | None, incident_id: int | None = None
) -> None:
    """Refuse to compute an activity-filtered impact without the activity (never widen to everyone)."""
    if impact.active_days and activity is None:
        which = f"incident {incident_id}" if incident_id is not None else "the incident"
        raise IncidentError(
            f"{which} counts only customers active in the {impact.active_days} days before it started "
            f"(impact filter active_days={impact.active_days}): pass the usage activity "
            "(forewarn.incidents.impact.usage_activity) to compute who it affects"
        )


def _compute_affected(session: Session, incident: Incident, activity: Activity | None, now: datetime) -> int:
    """Add the customers the scopes now reach, through the impact filter stored with the incident."""
    impact = ImpactFilter.from_json(incident.impact_filter)
    _require_activity(impact, activity, incident.id)
    window = impact.window(incident.started_at)
    active = activity(*window) if window is not None and activity is not None else None
    return compute_affected(session, incident.id, active_customers=active, now=now)


def post_update(
    session: Session,
    incident_id: int,
    *,
    message: str,
    status: str | None = None,
    eta: datetime | None = None,
    now: datetime | None = None,
) -> StepResult:
    """Add a public update (status change, news, new ETA) and queue it for every affected customer.

    Status ``resolved`` closes the incident (``resolved_at = now``) and its notice is the all-clear.
    """
    now = utc(now)
    incident = get_incident(session, incident_id)
    if incident.status == "resolved":
        raise IncidentError(f"incident {incident_id} is resolved; open a new incident instead")
    status = _check_status(status or incident.status)
    seq = (
        session.scalar(select(func.max(IncidentUpdate.seq)).where(IncidentUpdate.incident_id == incident_id))
        or 0
    ) + 1
    if eta is not None:
        incident.eta = utc(eta)
    incident.status = status
    incident.public_message = message
    incident.updated_at = now
    if status == "resolved":
        incident.resolved_at = now
    session.add(
        IncidentUpdate(
            incident_id=incident_id, seq=seq, status=status, message=message, eta=incident.eta, created_at=now
        )
    )
    session.flush()
    queued = fan_out(
        session, incident_id, seq, template=template_for(seq, status), severity=incident.severity, now=now
    )
    return StepResult(incident_id, seq, 0, queued)


def resolve_incident(
    session: Session, incident_id: int, *, message: str | None = None, now: datetime | None = None
) -> StepResult:
    """Resolve with an all-clear to everyone affected; a no-op on an already resolved incident."""
    incident = get_incident(session, incident_id)
    if incident.status == "resolved":
        return StepResult(incident_id, None, 0, 0)
    return post_update(
        session,
        incident_id,
        status="resolved",
        message=message or "The problem is fixed. Thank you for your patience.",
        now=now,
    )


def widen(
    session: Session,
    incident_id: int,
    scopes: Sequence[Scope],
    *,
    activity: Activity | None = None,
    create_services: bool = False,
    now: datetime | None = None,
) -> StepResult:
    """Add scopes (a new region or service); catch up only the newly affected with the latest status.

    Customers already affected receive nothing; the newly affected get one notice (the opening template with
    the incident's current status and message) in the same thread, keyed by the latest update's seq. Who is
    newly affected passes the incident's stored impact filter (``activity`` answers it; an incident with an
    activity filter is refused without one rather than widened to everyone).
    """
    now = utc(now)
    incident = get_incident(session, incident_id)
    if incident.status == "resolved":
        raise IncidentError(f"incident {incident_id} is resolved; it cannot widen")
    existing = {(s.service_id, s.region) for s in incident.scopes}
    new = [sc for sc in dict.fromkeys(scopes) if (sc.service_id, sc.region) not in existing]
    if not new:
        return StepResult(incident_id, None, 0, 0)
    _require_activity(ImpactFilter.from_json(incident.impact_filter), activity, incident_id)
    ensure_services(session, {s.service_id for s in new}, create=create_services)
    for sc in new:
        session.add(
            IncidentScope(incident_id=incident_id, service_id=sc.service_id, region=sc.region, added_at=now)
        )
    incident.updated_at = now
    session.flush()
    added = _compute_affected(session, incident, activity, now)
    latest = (
        session.scalar(select(func.max(IncidentUpdate.seq)).where(IncidentUpdate.incident_id == incident_id))
        or 0
    )
    queued = 0
    if added:
        queued = fan_out(
            session,
            incident_id,
            latest,
            template=TEMPLATE_OPEN,
            severity=incident.severity,
            added_since=now,
            extra={"catch_up": True},
            now=now,
        )
    return StepResult(incident_id, latest, added, queued)


def list_incidents(session: Session, *, status: str | None = None, limit: int = 100) -> list[Incident]:
    """Most recent first; ``status="open"`` means anything not resolved."""
    q = (
        select(Incident)
        .options(selectinload(Incident.scopes))
        .order_by(Incident.started_at.desc(), Incident.id.desc())
        .limit(limit)
    )
    if status == "open":
        q = q.where(Incident.status != "resolved")
    elif status:
        q = q.where(Incident.status == _check_status(status))
    return list(session.scalars(q))
