"""API route: the Prometheus Alertmanager webhook (``POST /v1/alertmanager``).

Configure Alertmanager with a receiver that sends an API token with the ``alerts:write`` scope as a bearer
token (Alertmanager's own ``http_config``)::

    webhook_configs:
      - url: http://forewarn:8000/v1/alertmanager
        http_config:
          authorization: {type: Bearer, credentials_file: /etc/alertmanager/forewarn-token}

Label names and mapping: see ``forewarn.incidents.alertmanager``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from forewarn.api.auth import Caller, requires
from forewarn.api.deps import get_ctx
from forewarn.api.errors import unprocessable
from forewarn.context import Context
from forewarn.incidents import alertmanager
from forewarn.incidents.impact import usage_activity
from forewarn.state import audit
from forewarn.state.db import transaction

router = APIRouter(tags=["incidents"])


@router.post("/v1/alertmanager")
def webhook(
    payload: dict[str, Any] = Body(...),
    caller: Caller = requires("alerts:write"),
    ctx: Context = Depends(get_ctx),
) -> dict[str, Any]:
    """Firing opens or widens the group's incident, resolved resolves it; replays change nothing."""
    try:
        with transaction(ctx.engine) as s:
            result = alertmanager.handle(s, payload, activity=usage_activity(ctx))
            if result.incident_id is not None and result.action in ("opened", "widened", "resolved"):
                audit.record(
                    s,
                    caller.actor,
                    f"incident.{result.action}",
                    f"incident:{result.incident_id}",
                    ip=caller.ip,
                    detail={"source": "alertmanager"},
                )
    except alertmanager.PayloadError as exc:
        raise unprocessable(f"alertmanager payload: {exc}", "body") from None
    return {"action": result.action, "incident_id": result.incident_id, "detail": result.detail}
