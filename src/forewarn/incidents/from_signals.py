"""Incidents from service-level signals: error rate up or traffic down per service and region.

The ``service_metric`` series (per service, region and metric) are scored by the usage detector's generic core
(``forewarn.detect.usage.score_series``: trailing robust baseline, so a row at time t uses only rows up to t).
A point is *bad* when it fires in the harmful direction of its metric (``error_rate``/``latency_ms`` up,
``requests``/``traffic``/``sessions`` down). Per (service, region):

- ``confirm`` bad points in a row open an incident whose ``started_at`` is the detection time (the confirming
  point's time), keyed ``signal:<service>:<region>:<detection time>`` so replays are idempotent;
- ``resolve_after`` points in a row with every metric back near its level before the outage (errors under
  ``recover_up`` x, traffic over ``recover_down`` x) resolve it, at the first healthy point's time;
- an episode on a service whose detector incident is still open elsewhere widens that incident (the outage
  spread to another region): an update to those already told, a catch-up for the newly affected; it resolves
  when all its regions have recovered.

:func:`service_events` is pure (frame in, events out) and serves live runs and replays of history alike;
:func:`apply_events` writes them to the state store.

>>> BAD_DIRECTION["error_rate"], BAD_DIRECTION["requests"]
('up', 'down')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from forewarn.detect.usage import UsageParams, score_series
from forewarn.incidents._db import utc
from forewarn.incidents.service import Scope, open_incident, post_update, resolve_incident, scopes_of, widen
from forewarn.state.db import transaction
from forewarn.state.models import Incident, IncidentScope, Service

if TYPE_CHECKING:
    from forewarn.context import Context

BAD_DIRECTION = {
    "error_rate": "up",
    "errors": "up",
    "latency_ms": "up",
    "requests": "down",
    "traffic": "down",
    "sessions": "down",
    "throughput": "down",
}


@dataclass(frozen=True)
class ServiceParams:
    """Detection parameters for service health series (5-minute readings by default)."""

    every: str = "5m"
    window: int = 24  # trailing points in the baseline (2 hours of 5-minute points)
    scale_window: int = 12
    z_threshold: float = 5.0
    min_ratio: float = 2.0  # error rate at least 2x usual
    max_drop_ratio: float = 0.5  # traffic at most half of usual
    min_abs_change: float = 0.0
    confirm: int = 2
    resolve_after: int = 3
    recover_up: float = 1.5  # recovered when errors are back under 1.5x the level before the outage
    recover_down: float = 0.8  # and traffic back over 0.8x it

    def usage_params(self) -> UsageParams:
        return UsageParams(
            window=self.window,
            scale_window=self.scale_window,
            season=None,
            z_threshold=self.z_threshold,
            min_ratio=self.min_ratio,
            max_drop_ratio=self.max_drop_ratio,
            min_abs_change=self.min_abs_change,
            every=self.every,
            fill_gaps=False,
            shift_window=6,
            shift_z=1e9,  # level shifts: not an outage signal
            silent_periods=10**9,
        )


@dataclass(frozen=True)
class ServiceEvent:
    kind: str  # open | resolve
    service_id: str
    region: str
    ts: datetime
    opened_at: datetime  # the detection time of the episode (the incident key)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"signal:{self.service_id}:{self.region}:{self.opened_at.isoformat()}"


def score(
    frame: pl.DataFrame, params: ServiceParams | None = None, as_of: datetime | None = None
) -> pl.DataFrame:
    """Every (service, region, metric, ts) scored, with ``bad`` = fired in the metric's harmful direction."""
    p = params or ServiceParams()
    if as_of is not None:
        frame = frame.filter(pl.col("ts") <= as_of)
    frame = frame.filter(pl.col("metric").is_in(list(BAD_DIRECTION)))
    if frame.is_empty():
        return frame.with_columns(bad=pl.lit(False))
    scored = score_series(frame, ["service_id", "region", "metric"], "value", p.usage_params())
    harmful = pl.col("metric").replace_strict(BAD_DIRECTION, default=None)
    return scored.with_columns(
        bad=(pl.col("signal").is_in(["spike", "drop"]) & (pl.col("direction") == harmful)).fill_null(False)
    )


def service_events(
    frame: pl.DataFrame, params: ServiceParams | None = None, as_of: datetime | None = None
) -> list[ServiceEvent]:
    """Open/resolve events over the history in ``frame`` (only rows with ``ts <= as_of``), in time order."""
    p = params or ServiceParams()
    scored = score(frame, p, as_of)
    if scored.is_empty():
        return []
    per_time = (
        scored.group_by(["service_id", "region", "ts"])
        .agg(
            bad=pl.col("bad").any(),
            metrics=pl.col("metric").filter(pl.col("bad")),
            values=pl.col("value").filter(pl.col("bad")),
            expected=pl.col("expected").filter(pl.col("bad")),
            all_metrics=pl.col("metric"),
            all_values=pl.col("value"),
            all_expected=pl.col("expected"),
        )
        .sort(["service_id", "region", "ts"])
    )
    events: list[ServiceEvent] = []
    for (service_id, region), group in per_time.group_by(["service_id", "region"], maintain_order=True):
        bad_run = good_run = 0
        open_at: datetime | None = None
        frozen: dict[str, float] = {}  # each metric's usual level when the episode opened
        first_good: datetime | None = None
        for row in group.iter_rows(named=True):
            if open_at is None:
                bad_run = bad_run + 1 if row["bad"] else 0
                if bad_run >= p.confirm:
                    open_at, good_run, first_good = row["ts"], 0, None
                    frozen = {m: e for m, e in zip(row["all_metrics"], row["all_expected"], strict=True) if e}
                    evidence = {
                        m: {"value": round(v, 4), "usual": round(e, 4) if e is not None else None}
                        for m, v, e in zip(row["metrics"], row["values"], row["expected"], strict=True)
                    }
                    events.append(ServiceEvent("open", service_id, region, open_at, open_at, evidence))
                continue
            # open: the spread widens with the outage itself, so recovery is judged against the level
            # frozen at opening (hysteresis), not by the detector going quiet
            current = dict(zip(row["all_metrics"], row["all_values"], strict=True))
            if _recovered(current, frozen, p):
                good_run += 1
                first_good = first_good or row["ts"]
                if good_run >= p.resolve_after:
                    events.append(ServiceEvent("resolve", service_id, region, first_good, open_at))
                    open_at, bad_run, frozen = None, 0, {}
            else:
                good_run, first_good = 0, None
    return sorted(events, key=lambda e: (e.ts, e.kind != "resolve"))


def _recovered(current: dict[str, float], frozen: dict[str, float], p: ServiceParams) -> bool:
    """Every metric with a frozen usual level is back near it (errors below ``recover_up`` x, traffic above
    ``recover_down`` x)."""
    for metric, usual in frozen.items():
        value = current.get(metric)
        if value is None:
            continue
        if BAD_DIRECTION[metric] == "up" and value > usual * p.recover_up:
            return False
        if BAD_DIRECTION[metric] == "down" and value < usual * p.recover_down:
            return False
    return True


def _describe(metrics: dict[str, Any]) -> str:
    parts = []
    if any(BAD_DIRECTION.get(m) == "up" for m in metrics):
        parts.append("errors are up")
    if any(BAD_DIRECTION.get(m) == "down" for m in metrics):
        parts.append("traffic dropped")
    return " and ".join(parts) or "service health is abnormal"


def _episode_incident(session: Session, ev: ServiceEvent) -> Incident | None:
    """The detector incident that took in the episode of ``ev`` (its scope added at the detection time)."""
    return session.scalars(
        select(Incident)
        .join(IncidentScope, IncidentScope.incident_id == Incident.id)
        .where(
            Incident.source == "detector",
            IncidentScope.service_id == ev.service_id,
            IncidentScope.region == ev.region,
            IncidentScope.added_at == ev.opened_at,
        )
    ).first()


def _open_detector_incident(session: Session, service_id: str) -> Incident | None:
    return session.scalars(
        select(Incident)
        .join(IncidentScope, IncidentScope.incident_id == Incident.id)
        .where(
            Incident.source == "detector",
            Incident.status != "resolved",
            IncidentScope.service_id == service_id,
        )
        .order_by(Incident.started_at)
    ).first()


def apply_events(
    session: Session, events: list[ServiceEvent], *, severity: str = "major"
) -> list[tuple[str, int]]:
    """Open, widen and resolve incidents for ``events`` (in time order); applied events change nothing.

    An episode on a service that already has an open detector incident (another region) widens that incident:
    the outage spread, and only the newly affected customers are caught up. The incident resolves when every
    region it covers has recovered. Returns the actions taken: (opened | widened | resolved, incident id).
    """
    names = dict(session.execute(select(Service.id, Service.name)).all())
    actions: list[tuple[str, int]] = []
    bad: set[tuple[str, str]] = set()  # (service, region) episodes open so far in this event stream
    for ev in events:
        name = names.get(ev.service_id, ev.service_id)
        if ev.kind == "open":
            bad.add((ev.service_id, ev.region))
            if _episode_incident(session, ev) is not None:
                continue  # applied before (a replay, or the previous sync)
            current = _open_detector_incident(session, ev.service_id)
            if current is not None:
                if (ev.service_id, ev.region) not in {(sc.service_id, sc.region) for sc in current.scopes}:
                    # tell those already affected first; the newly affected are caught up with this update
                    post_update(
                        session,
                        current.id,
                        message=f"The problem with {name} now also affects {ev.region}.",
                        now=ev.opened_at,
                    )
                    widen(session, current.id, [Scope(ev.service_id, ev.region)], now=ev.opened_at)
                    actions.append(("widened", current.id))
                continue
            inc = open_incident(
                session,
                title=f"{name} problem in {ev.region}",
                scopes=scopes_of([ev.service_id], [ev.region]),
                message=f"We see a problem with {name} in {ev.region} ({_describe(ev.evidence)}) and are "
                "investigating.",
                severity=severity,
                source="detector",
                external_key=ev.key,
                started_at=ev.opened_at,  # the detection time
                create_services=True,
                now=ev.ts,
            )
            actions.append(("opened", inc.id))
        else:
            bad.discard((ev.service_id, ev.region))
            inc = _episode_incident(session, ev) or _open_detector_incident(session, ev.service_id, ev.region)
            if inc is None or inc.status == "resolved":
                continue
            if any((sc.service_id, sc.region) in bad for sc in inc.scopes):
                continue  # another region of this incident is still down
            resolve_incident(session, inc.id, message=f"{name} is back to normal.", now=ev.ts)
            actions.append(("resolved", inc.id))
    return actions


def sync_from_signals(
    ctx: Context, *, as_of: datetime | None = None, params: ServiceParams | None = None
) -> list[tuple[str, int]]:
    """Read ``service_metric`` signals up to ``as_of`` from the signal store and apply the events."""
    as_of = utc(as_of)
    frame = ctx.signals.read("service_metric", end=as_of)
    events = service_events(frame, params, as_of)
    with transaction(ctx.engine) as s:
        return apply_events(s, events)
