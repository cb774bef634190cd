"""API route: the Prometheus Alertmanager webhook (``POST /v1/alertmanager``).

Configure Alertmanager with a receiver ``webhook_configs: [{url: http://forewarn:8000/v1/alertmanager}]``.
Label names and mapping: see ``forewarn.incidents.alertmanager``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException

from forewarn.api.deps import get_ctx
from forewarn.context import Context
from forewarn.incidents import alertmanager
from forewarn.incidents.impact import usage_activity
from forewarn.state.db import transaction

router = APIRouter(tags=["incidents"])


@router.post("/v1/alertmanager")
def webhook(payload: dict[str, Any] = Body(...), ctx: Context = Depends(get_ctx)) -> dict[str, Any]:
    """Firing opens or widens the group's incident, resolved resolves it; replays change nothing."""
    try:
        with transaction(ctx.engine) as s:
            result = alertmanager.handle(s, payload, activity=usage_activity(ctx))
    except alertmanager.PayloadError as exc:
        raise HTTPException(422, f"alertmanager payload: {exc}") from None
    return {"action": result.action, "incident_id": result.incident_id, "detail": result.detail}
