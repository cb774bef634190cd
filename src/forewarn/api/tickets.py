"""API routes: a ticket's state, and its status changes (close, reopen, pending).

A change is recorded as a ``ticket_update`` signal (event id ``api:<contact event id>:<status>:<time>``) and
applied through the same path as a helpdesk's, so the signal history (and a backtest of it) knows it too.
Asking for the state a ticket is already in changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from forewarn.api.auth import Caller, requires
from forewarn.api.deps import get_ctx
from forewarn.api.errors import Id, errors
from forewarn.context import Context
from forewarn.signals.ingest import ingest_records
from forewarn.state import audit
from forewarn.state.db import transaction
from forewarn.state.models import Ticket
from forewarn.state.tickets import CLOSED_STATUSES, is_open
from forewarn.timeutil import utc

router = APIRouter(prefix="/v1/tickets", tags=["tickets"])


class StatusIn(BaseModel):
    status: Literal["open", "pending", "solved", "closed"]
    at: datetime | None = Field(None, description="when it changed (default: now)")


class CloseIn(BaseModel):
    status: Literal["solved", "closed"] = "closed"
    at: datetime | None = Field(None, description="when it closed (default: now)")


def _view(ctx: Context, ticket_id: int, at: datetime) -> dict[str, Any]:
    with transaction(ctx.engine) as s:
        t = s.get(Ticket, ticket_id)
        if t is None:
            raise HTTPException(404, f"no ticket with id {ticket_id}")
        return {
            "id": t.id,
            "external_id": t.external_id,
            "customer_id": t.customer_id,
            "channel": t.channel,
            "topic": t.topic,
            "status": t.status,
            "opened_at": t.opened_at,
            "last_activity_at": t.last_activity_at,
            "closed_at": t.closed_at,
            "open": is_open(t.status, t.last_activity_at, at, ctx.settings.ticket_idle_close),
        }


def _set_status(
    ctx: Context, caller: Caller, ticket_id: int, status: str, at: datetime | None
) -> dict[str, Any]:
    at = utc(at)
    before = _view(ctx, ticket_id, at)
    if before["status"] == status and (status in CLOSED_STATUSES or before["open"]):
        return {**before, "changed": False}
    record = {
        "event_id": f"api:{before['external_id']}:{status}:{at.isoformat()}",
        "customer_id": before["customer_id"],
        "ts": at,
        "ticket_id": before["external_id"],
        "status": status,
    }
    ingest_records(ctx, "ticket_update", [record], source="api")
    after = _view(ctx, ticket_id, at)
    if after != before:
        with transaction(ctx.engine) as s:
            detail = {"from": before["status"], "to": after["status"]}
            audit.record(
                s, caller.actor, "ticket.status_changed", f"ticket:{ticket_id}", ip=caller.ip, detail=detail
            )
    return {**after, "changed": after != before}


@router.get("/{ticket_id}", responses=errors(404))
def show(
    ticket_id: Id, ctx: Context = Depends(get_ctx), caller: Caller = requires("tickets:read")
) -> dict[str, Any]:
    """A ticket and whether its case is open now."""
    return _view(ctx, ticket_id, utc(None))


@router.patch("/{ticket_id}", responses=errors(404))
def set_status(
    ticket_id: Id,
    body: StatusIn,
    ctx: Context = Depends(get_ctx),
    caller: Caller = requires("tickets:write"),
) -> dict[str, Any]:
    """Change a ticket's status (``open`` after solved or closed reopens it)."""
    return _set_status(ctx, caller, ticket_id, body.status, body.at)


@router.post("/{ticket_id}/close", responses=errors(404))
def close(
    ticket_id: Id,
    body: CloseIn | None = None,
    ctx: Context = Depends(get_ctx),
    caller: Caller = requires("tickets:write"),
) -> dict[str, Any]:
    """Close a ticket (``solved`` or ``closed``); closing a closed ticket changes nothing."""
    body = body or CloseIn()
    return _set_status(ctx, caller, ticket_id, body.status, body.at)
