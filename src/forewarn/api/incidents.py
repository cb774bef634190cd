"""API routes: incidents (open, update, widen, resolve, list, show, metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from forewarn.api.auth import Caller, requires
from forewarn.api.deps import get_ctx
from forewarn.api.errors import Id, errors, unprocessable
from forewarn.context import Context
from forewarn.incidents import service
from forewarn.incidents.context import incident_view
from forewarn.incidents.impact import ImpactFilter, affected_count, usage_activity
from forewarn.incidents.metrics import incident_metrics
from forewarn.state import audit
from forewarn.state.db import transaction
from forewarn.state.models import Incident

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

READ = requires("incidents:read")
WRITE = requires("incidents:write")

Status = Literal["investigating", "identified", "monitoring", "resolved"]


class ScopeIn(BaseModel):
    service_id: str
    region: str = "*"


class IncidentIn(BaseModel):
    title: str = Field(min_length=1, max_length=512)
    services: list[str] = Field(default_factory=list, description="service ids; each in every listed region")
    regions: list[str] = Field(default_factory=list, description="regions; empty means every region ('*')")
    scopes: list[ScopeIn] = Field(
        default_factory=list, description="explicit (service, region) pairs instead"
    )
    message: str | None = None
    status: Literal["investigating", "identified", "monitoring"] = "investigating"
    severity: Literal["minor", "major", "critical"] = "major"
    eta: datetime | None = None
    started_at: datetime | None = None
    external_key: str | None = None
    active_days: int | None = Field(
        None,
        ge=1,
        description="only customers with usage in the N days before it started (kept for widening)",
    )
    now: datetime | None = Field(None, description="event time (for replaying history); default: now")


class UpdateIn(BaseModel):
    message: str = Field(min_length=1)
    status: Status | None = None
    eta: datetime | None = None
    now: datetime | None = None


class WidenIn(BaseModel):
    services: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    scopes: list[ScopeIn] = Field(default_factory=list)
    now: datetime | None = None


def _view(session: Any, inc: Incident, *, full: bool = False) -> dict[str, Any]:
    view = incident_view(session, inc.id)
    view["scopes"] = [{"service_id": s.service_id, "region": s.region} for s in inc.scopes]
    view["affected"] = affected_count(session, inc.id)
    view["impact_filter"] = inc.impact_filter
    if full:
        view["updates"] = [
            {"seq": u.seq, "status": u.status, "message": u.message, "eta": u.eta, "created_at": u.created_at}
            for u in inc.updates
        ]
    return view


def _audit(session: Any, caller: Caller, action: str, incident_id: int, **detail: Any) -> None:
    audit.record(session, caller.actor, action, f"incident:{incident_id}", ip=caller.ip, detail=detail)


def _scopes(services: list[str], regions: list[str], scopes: list[ScopeIn]) -> list[service.Scope]:
    if scopes:
        return [service.Scope(s.service_id, s.region) for s in scopes]
    return service.scopes_of(services, regions)


@router.post("", status_code=201)
def open_incident(
    body: IncidentIn, caller: Caller = WRITE, ctx: Context = Depends(get_ctx)
) -> dict[str, Any]:
    """Open an incident; its affected customers are computed and their opening notices queued."""
    try:
        with transaction(ctx.engine) as s:
            inc = service.open_incident(
                s,
                title=body.title,
                scopes=_scopes(body.services, body.regions, body.scopes),
                message=body.message,
                status=body.status,
                severity=body.severity,
                eta=body.eta,
                started_at=body.started_at,
                external_key=body.external_key,
                impact=ImpactFilter(active_days=body.active_days),
                activity=usage_activity(ctx),
                now=body.now,
            )
            view = _view(s, inc, full=True)
            _audit(s, caller, "incident.opened", inc.id, affected=view["affected"])
            return view
    except service.IncidentError as exc:
        raise unprocessable(str(exc), "body") from None


@router.post("/{incident_id}/updates", status_code=201, responses=errors(404, 409))
def post_update(
    incident_id: Id, body: UpdateIn, caller: Caller = WRITE, ctx: Context = Depends(get_ctx)
) -> dict[str, Any]:
    """A public update (status ``resolved`` sends the all-clear)."""
    try:
        with transaction(ctx.engine) as s:
            step = service.post_update(
                s, incident_id, message=body.message, status=body.status, eta=body.eta, now=body.now
            )
            _audit(s, caller, "incident.updated", incident_id, status=body.status, queued=step.queued)
            return {
                "incident": _view(s, service.get_incident(s, incident_id), full=True),
                "seq": step.seq,
                "queued": step.queued,
            }
    except service.IncidentError as exc:
        raise HTTPException(404 if "no incident" in str(exc) else 409, str(exc)) from None


@router.post("/{incident_id}/resolve", responses=errors(404))
def resolve(
    incident_id: Id,
    body: UpdateIn | None = None,
    caller: Caller = WRITE,
    ctx: Context = Depends(get_ctx),
) -> dict[str, Any]:
    try:
        with transaction(ctx.engine) as s:
            step = service.resolve_incident(
                s, incident_id, message=body.message if body else None, now=body.now if body else None
            )
            _audit(s, caller, "incident.resolved", incident_id, queued=step.queued)
            return {
                "incident": _view(s, service.get_incident(s, incident_id)),
                "seq": step.seq,
                "queued": step.queued,
            }
    except service.IncidentError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{incident_id}/scopes", responses=errors(404, 409))
def widen(
    incident_id: Id, body: WidenIn, caller: Caller = WRITE, ctx: Context = Depends(get_ctx)
) -> dict[str, Any]:
    """Widen to more services/regions; only the newly affected are caught up."""
    try:
        with transaction(ctx.engine) as s:
            step = service.widen(
                s,
                incident_id,
                _scopes(body.services, body.regions, body.scopes),
                activity=usage_activity(ctx),
                now=body.now,
            )
            _audit(s, caller, "incident.widened", incident_id, newly_affected=step.newly_affected)
            return {
                "incident": _view(s, service.get_incident(s, incident_id)),
                "newly_affected": step.newly_affected,
                "queued": step.queued,
            }
    except service.IncidentError as exc:
        raise HTTPException(404 if "no incident" in str(exc) else 409, str(exc)) from None


@router.get("", dependencies=[READ])
def list_incidents(
    status: str | None = None, limit: int = Query(100, ge=1, le=1000), ctx: Context = Depends(get_ctx)
) -> list[dict]:
    """Incidents, most recent first; ``status=open`` for all unresolved ones."""
    try:
        with transaction(ctx.engine) as s:
            return [_view(s, inc) for inc in service.list_incidents(s, status=status, limit=limit)]
    except service.IncidentError as exc:
        raise unprocessable(str(exc), "query", "status") from None


@router.get("/{incident_id}", dependencies=[READ], responses=errors(404))
def show(incident_id: Id, ctx: Context = Depends(get_ctx)) -> dict[str, Any]:
    try:
        with transaction(ctx.engine) as s:
            return _view(s, service.get_incident(s, incident_id), full=True)
    except service.IncidentError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/{incident_id}/metrics", dependencies=[READ], responses=errors(404))
def metrics(incident_id: Id, ctx: Context = Depends(get_ctx)) -> dict[str, Any]:
    """Affected, notified, time to first notice (p50/p95), contacts before and after the notice."""
    try:
        with transaction(ctx.engine) as s:
            return incident_metrics(s, incident_id).as_dict()
    except service.IncidentError as exc:
        raise HTTPException(404, str(exc)) from None
