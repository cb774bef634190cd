"""API route: the audit log (``GET /v1/audit``), newest first; page with ``before`` (the last id seen)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from forewarn.api.auth import Caller, requires
from forewarn.api.deps import get_ctx
from forewarn.api.errors import MAX_ID
from forewarn.context import Context
from forewarn.state import audit
from forewarn.state.db import transaction

router = APIRouter(prefix="/v1", tags=["audit"])


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    ip: str | None
    detail: dict[str, Any] | None


@router.get("/audit", response_model=list[AuditEntryOut])
def audit_log(
    actor: str | None = Query(None, max_length=200, description="e.g. token:3, user:alice, cli:root"),
    action: str | None = Query(None, max_length=64, description="e.g. incident.opened"),
    target: str | None = Query(None, max_length=255, description="e.g. incident:42"),
    since: datetime | None = Query(None, description="only entries at or after this time"),
    before: int | None = Query(
        None, ge=1, le=MAX_ID, description="only entries older than this id (the next page)"
    ),
    limit: int = Query(100, ge=1, le=1000),
    caller: Caller = requires("audit:read"),
    ctx: Context = Depends(get_ctx),
) -> list[AuditEntryOut]:
    """Who changed what, when and from where."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # a time without a zone is UTC, as everywhere in forewarn
    with transaction(ctx.engine) as s:
        rows = audit.entries(
            s, actor=actor, action=action, target=target, since=since, before_id=before, limit=limit
        )
        return [AuditEntryOut.model_validate(r, from_attributes=True) for r in rows]
