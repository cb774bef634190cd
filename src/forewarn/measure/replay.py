"""Replay a history of service health through the incident pipeline, on the history's own clock.

For the demo and for evaluation on simulated data: detection events come from the ``service_metric`` signals
(:func:`forewarn.incidents.from_signals.service_events`, each decided only from data up to its time); at each
event the incident opens, widens or resolves with ``now`` = the event time, the delivery worker sends what is
due (``sent_at`` = the tick plus ``delivery_delay``), and inbound contacts opened so far are linked every
``link_every``. The result is one metrics record per incident; with the simulator's ground truth it includes
the contacts avoided against the no-notice baseline.

The state store must already hold the customers, services, dependencies and tickets (``forewarn ingest``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from forewarn.incidents.from_signals import ServiceParams, apply_events, read_maintenance, service_events
from forewarn.incidents.link import DEFAULT_GRACE, link_tickets
from forewarn.incidents.metrics import incident_metrics
from forewarn.measure.truth import contacts_avoided
from forewarn.state.db import transaction
from forewarn.state.models import Incident

if TYPE_CHECKING:
    import polars as pl

    from forewarn.context import Context


@dataclass
class ReplayResult:
    actions: list[tuple[str, int, datetime]] = field(default_factory=list)
    linked: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)


def _cause_for(incident: Incident, truth: pl.DataFrame) -> str | None:
    """The simulated disruption an incident is about: same service, a shared region, overlapping in time."""
    import polars as pl

    regions = {s.region for s in incident.scopes}
    services = {s.service_id for s in incident.scopes}
    end = incident.resolved_at or incident.started_at
    rows = truth.filter(
        pl.col("type").is_in(["outage", "maintenance"])
        & pl.col("service_id").is_in(list(services))
        & (pl.col("start") <= end)
        & (pl.col("end") >= incident.started_at - timedelta(minutes=30))
    )
    for row in rows.iter_rows(named=True):
        if regions & set(row.get("regions") or []):
            return str(row["id"])
    return None


def replay_outages(
    ctx: Context,
    *,
    worker: Any | None = None,
    params: ServiceParams | None = None,
    delivery_delay: timedelta = timedelta(minutes=1),
    link_every: timedelta = timedelta(minutes=5),
    grace: timedelta = DEFAULT_GRACE,
    truth: pl.DataFrame | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Detect, notify, deliver and link over the stored service health history; see the module docstring.

    ``worker`` is a ``forewarn.deliver.worker.Worker`` (None: notices stay queued, nothing is delivered).
    ``progress(done, total)`` is called after each tick of the replay's clock (a progress bar).
    """
    frame = ctx.signals.read("service_metric", start=start, end=end)
    events = service_events(frame, params, maintenance=read_maintenance(ctx, end))
    result = ReplayResult()
    if not events:
        return result
    ticks: dict[datetime, list[Any]] = {}
    for ev in events:
        ticks.setdefault(ev.ts, []).append(ev)
    # link ticks through each episode and its grace period
    opened: dict[tuple[str, str, datetime], datetime] = {}
    for ev in events:
        key = (ev.service_id, ev.region, ev.opened_at)
        if ev.kind == "open":
            opened[key] = ev.ts
        else:
            t = opened.pop(key, ev.opened_at)
            while t <= ev.ts + grace:
                ticks.setdefault(t, [])
                t += link_every
    last = max(ticks)
    for t in opened.values():  # still open at the end of the data
        while t <= last:
            ticks.setdefault(t, [])
            t += link_every
    for done, t in enumerate(sorted(ticks), 1):
        if progress is not None:
            progress(done, len(ticks))
        if ticks[t]:
            with transaction(ctx.engine) as s:
                for action, incident_id in apply_events(s, ticks[t]):
                    result.actions.append((action, incident_id, t))
        if worker is not None:
            worker.drain(now=t + delivery_delay)
        result.linked += link_tickets(ctx, now=t, grace=grace).linked
        if worker is not None:
            worker.drain(now=t + delivery_delay)  # the auto-replies
    with transaction(ctx.engine) as s:
        ids = sorted({incident_id for _, incident_id, _ in result.actions})
        for incident_id in ids:
            record = incident_metrics(s, incident_id, grace=grace, now=last).as_dict()
            inc = s.scalars(select(Incident).where(Incident.id == incident_id)).one()
            record["title"] = inc.title
            if truth is not None:
                cause = _cause_for(inc, truth)
                record["contacts_avoided"] = contacts_avoided(s, incident_id, truth, cause) if cause else None
            result.incidents.append(record)
    return result
