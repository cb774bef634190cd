"""Prometheus Alertmanager webhook payloads (version 4) -> incidents.

One Alertmanager *group* (``groupKey``) is one incident, keyed ``alertmanager:<groupKey>``:

- ``status: firing`` opens the incident, or widens it when the group now covers a service/region it did not;
- ``status: resolved`` resolves it (``resolved_at`` = the latest ``endsAt``);
- replaying a payload changes nothing (same group, same scopes: no new update, no new notice).

Labels (per alert, falling back to ``commonLabels``):

====================  ==========================================================================
``service``           the forewarn service id (also read: ``forewarn_service``); required
``region``            the region; absent means every region (also read: ``forewarn_region``)
``severity``          ``critical`` / ``major`` / ``minor`` (``warning`` maps to ``minor``,
                      ``page`` and ``error`` to ``major``); default ``major``
====================  ==========================================================================

Annotations: ``summary`` is the incident title (default: the ``alertname`` label), ``description`` (or
``message``) its public message. The incident starts at the earliest ``startsAt`` of its alerts.

>>> p = {"version": "4", "status": "firing", "groupKey": "{}:{alertname=\\"Down\\"}", "alerts": [
...   {"status": "firing", "labels": {"alertname": "Down", "service": "internet", "region": "north"},
...    "annotations": {}, "startsAt": "2026-03-01T09:00:00Z"}]}
>>> parse(p).scopes
[Scope(service_id='internet', region='north')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from forewarn.incidents.impact import Activity
from forewarn.incidents.service import (
    IncidentError,
    Scope,
    StepResult,
    find_by_key,
    open_incident,
    resolve_incident,
    widen,
)
from forewarn.timeutil import utc

SERVICE_LABELS = ("service", "forewarn_service")
REGION_LABELS = ("region", "forewarn_region")
SEVERITY_MAP = {
    "critical": "critical",
    "major": "major",
    "page": "major",
    "error": "major",
    "high": "major",
    "minor": "minor",
    "warning": "minor",
    "info": "minor",
    "low": "minor",
}


class PayloadError(ValueError):
    """An Alertmanager payload this endpoint cannot use; the message names the field and what was expected."""


@dataclass
class Group:
    """One Alertmanager notification, reduced to what an incident needs."""

    key: str
    status: str
    title: str
    message: str
    severity: str
    scopes: list[Scope]
    started_at: datetime | None
    ended_at: datetime | None
    fingerprints: list[str] = field(default_factory=list)


def _time(value: Any, where: str) -> datetime | None:
    if not value or str(value).startswith("0001-01-01"):  # Alertmanager's "zero" time
        return None
    try:
        return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        raise PayloadError(
            f"{where}: {value!r} is not an RFC 3339 time such as 2026-03-01T09:00:00Z"
        ) from None


def _label(labels: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if labels.get(name):
            return str(labels[name])
    return None


def parse(payload: dict[str, Any]) -> Group:
    """Validate a webhook payload and reduce it to a :class:`Group`."""
    if not isinstance(payload, dict):
        raise PayloadError("payload: expected a JSON object")
    status = payload.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"status: expected 'firing' or 'resolved', got {status!r}")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError("alerts: expected a non-empty list")
    common = payload.get("commonLabels") or {}
    common_ann = payload.get("commonAnnotations") or {}
    group_key = payload.get("groupKey")
    if not group_key:
        # without a groupKey the group labels identify the group
        gl = payload.get("groupLabels") or common
        if not gl:
            raise PayloadError("groupKey: missing (and no groupLabels/commonLabels to identify the group)")
        group_key = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(gl.items())) + "}"
    scopes: list[Scope] = []
    severities: list[str] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    fingerprints: list[str] = []
    title = message = ""
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise PayloadError(f"alerts[{i}]: expected an object")
        labels = {**common, **(alert.get("labels") or {})}
        ann = {**common_ann, **(alert.get("annotations") or {})}
        service = _label(labels, SERVICE_LABELS)
        if service is None:
            raise PayloadError(
                f"alerts[{i}].labels: no service label; expected one of {', '.join(SERVICE_LABELS)} naming a "
                "forewarn service id"
            )
        scopes.append(Scope(service, _label(labels, REGION_LABELS) or "*"))
        sev = str(labels.get("severity", "major")).lower()
        severities.append(SEVERITY_MAP.get(sev, "major"))
        if (t := _time(alert.get("startsAt"), f"alerts[{i}].startsAt")) is not None:
            starts.append(t)
        if (t := _time(alert.get("endsAt"), f"alerts[{i}].endsAt")) is not None and alert.get(
            "status"
        ) == "resolved":
            ends.append(t)
        fingerprints.append(str(alert.get("fingerprint") or ""))
        title = title or ann.get("summary") or labels.get("alertname") or ""
        message = message or ann.get("description") or ann.get("message") or ann.get("summary") or ""
    order = ["minor", "major", "critical"]
    return Group(
        key=f"alertmanager:{group_key}",
        status=status,
        title=title or "Service problem",
        message=message or title or "We are looking into a problem.",
        severity=max(severities, key=order.index),
        scopes=list(dict.fromkeys(scopes)),
        started_at=min(starts) if starts else None,
        ended_at=max(ends) if ends else None,
        fingerprints=fingerprints,
    )


@dataclass(frozen=True)
class WebhookResult:
    action: str  # opened, widened, unchanged, resolved, ignored
    incident_id: int | None
    detail: str = ""


def handle(
    session: Session,
    payload: dict[str, Any],
    *,
    activity: Activity | None = None,
    now: datetime | None = None,
) -> WebhookResult:
    """Apply one webhook payload; safe to replay. ``activity`` answers the impact filter of an incident
    widened by it (see :func:`forewarn.incidents.service.widen`)."""
    now = utc(now)
    group = parse(payload)
    existing = find_by_key(session, group.key)
    if group.status == "resolved":
        if existing is None or existing.status == "resolved":
            return WebhookResult(
                "ignored", existing.id if existing else None, "no open incident for this group"
            )
        resolve_incident(
            session,
            existing.id,
            message="The problem is fixed. Thank you for your patience.",
            now=group.ended_at or now,
        )
        return WebhookResult("resolved", existing.id)
    if existing is not None and existing.status == "resolved":
        # a firing replay of the episode already resolved is a duplicate, not a new outage
        if (
            group.started_at is None
            or existing.resolved_at is None
            or group.started_at <= existing.resolved_at
        ):
            return WebhookResult(
                "ignored", existing.id, "the group's incident is resolved; replayed firing ignored"
            )
        existing = None
    if existing is None:
        inc = open_incident(
            session,
            title=group.title,
            scopes=group.scopes,
            message=group.message,
            severity=group.severity,
            source="alertmanager",
            external_key=group.key,
            started_at=group.started_at or now,
            create_services=True,
            now=now,
        )
        return WebhookResult("opened", inc.id)
    result: StepResult = widen(
        session, existing.id, group.scopes, activity=activity, create_services=True, now=now
    )
    if result.newly_affected or result.seq is not None:
        return WebhookResult("widened", existing.id, f"{result.newly_affected} newly affected")
    return WebhookResult("unchanged", existing.id)


__all__ = ["Group", "IncidentError", "PayloadError", "WebhookResult", "handle", "parse"]
