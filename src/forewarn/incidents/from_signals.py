"""Incidents from service-level signals: error rate up or traffic down per service and region.

The ``service_metric`` series (per service, region and metric) are scored by the usage detector's generic core
(``forewarn.detect.usage.score_series``: trailing robust baseline, so a row at time t uses only rows up to t).
A point is *bad* when it fires in the harmful direction of its metric (``error_rate``/``latency_ms`` up,
``requests``/``traffic``/``sessions`` down). Per (service, region):

- ``confirm`` bad points in a row open an incident whose ``started_at`` is the detection time (the confirming
  point's time), keyed ``signal:<service>:<region>:<detection time>`` so replays are idempotent;
- ``resolve_after`` points in a row back to normal resolve it, at the first healthy point's time: error rates
  (when they alarmed) under ``recover_up`` x their level before the outage or under ``min_error_rate``;
  otherwise traffic over ``recover_down`` x its level before;
- an episode on a service whose detector incident is still open elsewhere widens that incident (the outage
  spread to another region): an update to those already told, a catch-up for the newly affected; it resolves
  when all its regions have recovered;
- an episode that opens inside a planned maintenance window of its service (and region), announced before it
  (``subscription`` signals with ``event_type`` ``maintenance``, see :func:`maintenance_windows`), is that
  maintenance: the schedule trip wire already told the customers, so no incident is opened.

:func:`service_events` is pure (frame in, events out) and serves live runs and replays of history alike;
:func:`apply_events` writes them to the state store.

>>> BAD_DIRECTION["error_rate"], BAD_DIRECTION["requests"]
('up', 'down')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from forewarn.detect.schedule import _details as notice_details
from forewarn.detect.usage import UsageParams, score_series, tail_periods
from forewarn.incidents.impact import Activity, usage_activity
from forewarn.incidents.service import Scope, open_incident, post_update, resolve_incident, scopes_of, widen
from forewarn.state.db import transaction
from forewarn.state.models import Dependency, Incident, IncidentScope, Service
from forewarn.timeutil import parse_duration, utc

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
RATE_METRICS = ("error_rate",)
# history read before the earliest moment a live pass can act on (see ``read_start``)
READ_MARGIN = timedelta(days=1)


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
    min_error_rate: float = 0.05  # an error-rate alarm needs at least 5% of requests failing
    poisson_z: float = 6.0  # a traffic drop must be this many count standard errors below usual
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
            hold_periods=0,  # an outage's course is followed by ``service_events``' own resolve rule
            drop_additive_z=None,  # traffic drops: the additive z_threshold-style test, as before
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


@dataclass(frozen=True)
class MaintenanceWindow:
    """Planned maintenance on a service (in one region, or every region when ``region`` is None), in UTC."""

    service_id: str
    region: str | None
    start: datetime
    end: datetime
    announced_at: datetime  # the first announcement: an episode before it cannot be explained by it

    def covers(self, service_id: str, region: str, ts: datetime) -> bool:
        return (
            self.service_id == service_id
            and self.region in (None, region)
            and self.announced_at <= ts
            and self.start <= ts <= self.end
        )


# a local time is between UTC-12 and UTC+14: a window given in local time, in UTC, lies within these margins
LOCAL_BEFORE, LOCAL_AFTER = timedelta(hours=14), timedelta(hours=12)
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def maintenance_windows(
    subscriptions: pl.DataFrame, dependencies: pl.DataFrame | None = None
) -> list[MaintenanceWindow]:
    """The planned maintenance windows announced in ``subscription`` signals (``event_type`` maintenance).

    The window is the ``due_date`` (a local day), narrowed to the hours in ``details`` (``"01:00-04:00"`` in
    its text, or a JSON ``window``), widened by the span of time zones. Its regions: a JSON ``region`` in
    ``details``, else those of the announced customers' ``dependencies`` on the service (customer_id,
    service_id, region), else every region.

    >>> from datetime import UTC, date, datetime
    >>> subs = pl.DataFrame({"customer_id": ["c1"], "ts": [datetime(2026, 3, 1, tzinfo=UTC)],
    ...     "event_type": ["maintenance"], "due_date": [date(2026, 3, 10)], "service_id": ["tv"],
    ...     "details": ["planned maintenance 01:00-03:00 local time"]})
    >>> deps = pl.DataFrame({"customer_id": ["c1"], "service_id": ["tv"], "region": ["north"]})
    >>> w = maintenance_windows(subs, deps)[0]
    >>> (w.region, w.start.isoformat(), w.end.isoformat())
    ('north', '2026-03-09T11:00:00+00:00', '2026-03-10T15:00:00+00:00')
    """
    if subscriptions.is_empty() or "event_type" not in subscriptions.columns:
        return []
    rows = subscriptions.filter(
        (pl.col("event_type") == "maintenance")
        & pl.col("service_id").is_not_null()
        & pl.col("due_date").is_not_null()
    )
    if rows.is_empty():
        return []
    if dependencies is not None and not dependencies.is_empty():
        rows = rows.join(
            dependencies.select("customer_id", "service_id", "region"),
            on=["customer_id", "service_id"],
            how="left",
        )
    else:
        rows = rows.with_columns(region=pl.lit(None, pl.String))
    grouped = rows.group_by("service_id", "due_date", "details").agg(
        announced_at=pl.col("ts").min(), regions=pl.col("region").drop_nulls().unique()
    )
    out: list[MaintenanceWindow] = []
    for r in grouped.sort("service_id", "due_date").iter_rows(named=True):
        details = notice_details(r["details"])
        day = datetime(r["due_date"].year, r["due_date"].month, r["due_date"].day, tzinfo=UTC)
        hours = _HOURS.search(str(details.get("window") or details.get("text") or ""))
        if hours:
            h1, m1, h2, m2 = (int(x) for x in hours.groups())
            start, end = day + timedelta(hours=h1, minutes=m1), day + timedelta(hours=h2, minutes=m2)
            end += timedelta(days=1) if end <= start else timedelta(0)
        else:
            start, end = day, day + timedelta(days=1)
        regions = [details["region"]] if details.get("region") else sorted(r["regions"]) or [None]
        for region in regions:
            out.append(
                MaintenanceWindow(
                    r["service_id"], region, start - LOCAL_BEFORE, end + LOCAL_AFTER, utc(r["announced_at"])
                )
            )
    return out


def score(
    frame: pl.DataFrame, params: ServiceParams | None = None, as_of: datetime | None = None
) -> pl.DataFrame:
    """Every (service, region, metric, ts) scored, with ``bad`` = fired in the metric's harmful direction.

    Besides the detector's own test, an error-rate point needs at least ``min_error_rate`` failing, and a drop
    in a count (requests...) must be ``poisson_z`` standard errors of a count below the usual level: a quiet
    series losing 17 of 30 requests at night is noise, losing 1,300 of 1,900 is not.
    """
    p = params or ServiceParams()
    if as_of is not None:
        frame = frame.filter(pl.col("ts") <= as_of)
    frame = frame.filter(pl.col("metric").is_in(list(BAD_DIRECTION)))
    if frame.is_empty():
        return frame.with_columns(bad=pl.lit(False), expected=pl.lit(None, pl.Float64))
    scored = score_series(frame, ["service_id", "region", "metric"], "value", p.usage_params())
    harmful = pl.col("metric").replace_strict(BAD_DIRECTION, default=None)
    fired = pl.col("signal").is_in(["spike", "drop"]) & (pl.col("direction") == harmful)
    rate = pl.col("metric").is_in(RATE_METRICS)
    up = harmful == "up"
    meaningful = (
        pl.when(rate)
        .then(pl.col("value") >= p.min_error_rate)
        .when(up)
        .then(pl.lit(True))
        .otherwise(
            (pl.col("expected") - pl.col("value")) / pl.col("expected").clip(1.0).sqrt() >= p.poisson_z
        )
    )
    return scored.with_columns(bad=(fired & meaningful).fill_null(False))


def service_events(
    frame: pl.DataFrame,
    params: ServiceParams | None = None,
    as_of: datetime | None = None,
    maintenance: Sequence[MaintenanceWindow] = (),
) -> list[ServiceEvent]:
    """Open/resolve events over the history in ``frame`` (only rows with ``ts <= as_of``), in time order.

    An episode opening inside an announced ``maintenance`` window of its service and region gives no events.
    """
    p = params or ServiceParams()
    scored = score(frame, p, as_of)
    if scored.is_empty():
        return []
    metrics = sorted(scored["metric"].unique().to_list())
    wide = (
        scored.select("service_id", "region", "ts", "metric", "value", "expected", "bad")
        .pivot(on="metric", index=["service_id", "region", "ts"], values=["value", "expected", "bad"])
        .sort(["service_id", "region", "ts"])
    )

    def col(name: str, metric: str) -> str:
        return f"{name}_{metric}" if len(metrics) > 1 else name

    events: list[ServiceEvent] = []
    for (service_id, region), g in wide.group_by(["service_id", "region"], maintain_order=True):
        ts = g["ts"].to_list()
        value = {m: g[col("value", m)].to_numpy().astype(float) for m in metrics}
        expected = {m: g[col("expected", m)].to_numpy().astype(float) for m in metrics}
        bad_m = {m: g[col("bad", m)].fill_null(False).to_numpy().astype(bool) for m in metrics}
        bad = np.logical_or.reduce([bad_m[m] for m in metrics])
        start = 0
        while start < len(ts):
            opened = _first_run_end(bad[start:], p.confirm)
            if opened is None:
                break
            i = start + opened
            # the spread widens with the outage itself, so recovery is judged against the level frozen at
            # opening (hysteresis), not by the detector going quiet
            # recovery is judged on the error rates when they alarmed (traffic has a daily rhythm a frozen
            # level would misread at night), else on the traffic that dropped
            judged = [m for m in metrics if bad_m[m][i] and BAD_DIRECTION[m] == "up"] or [
                m for m in metrics if bad_m[m][i]
            ]
            frozen = {m: expected[m][i] for m in judged if np.isfinite(expected[m][i]) and expected[m][i] > 0}
            evidence = {
                m: {"value": round(float(value[m][i]), 4), "usual": round(float(expected[m][i]), 4)}
                for m in metrics
                if bad_m[m][i]
            }
            planned = any(w.covers(service_id, region, utc(ts[i])) for w in maintenance)
            if not planned:
                events.append(ServiceEvent("open", service_id, region, ts[i], ts[i], evidence))
            ok = np.ones(len(ts) - i - 1, dtype=bool)
            for m, usual in frozen.items():
                v = value[m][i + 1 :]
                if BAD_DIRECTION[m] == "up":  # back under the alarm floor, or near the usual level
                    limit = max(usual * p.recover_up, p.min_error_rate if m in RATE_METRICS else 0.0)
                else:
                    limit = usual * p.recover_down
                fine = (v <= limit) if BAD_DIRECTION[m] == "up" else (v >= limit)
                ok &= fine | ~np.isfinite(v)
            closed = _first_run_end(ok, p.resolve_after)
            if closed is None:
                break  # still open at the end of the data
            first_good = i + 1 + closed - p.resolve_after + 1
            if not planned:
                events.append(ServiceEvent("resolve", service_id, region, ts[first_good], ts[i]))
            start = i + 1 + closed + 1
    return sorted(events, key=lambda e: (e.ts, e.kind != "resolve"))


def _first_run_end(mask: np.ndarray, length: int) -> int | None:
    """Index where the first run of ``length`` consecutive True values in ``mask`` is complete.

    >>> _first_run_end(np.array([True, False, True, True, True]), 2)
    3
    >>> _first_run_end(np.array([], dtype=bool), 3) is None  # an episode opened on the last reading
    True
    """
    if mask.size < length:
        return None
    if length <= 1:
        hits = np.flatnonzero(mask)
        return int(hits[0]) if hits.size else None
    window = np.convolve(mask.astype(np.int64), np.ones(length, dtype=np.int64), mode="valid")
    hits = np.flatnonzero(window >= length)
    return int(hits[0]) + length - 1 if hits.size else None


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


def _open_detector_incident(session: Session, service_id: str, region: str | None = None) -> Incident | None:
    """The oldest unresolved detector incident on ``service_id`` (covering ``region``, when given)."""
    q = (
        select(Incident)
        .join(IncidentScope, IncidentScope.incident_id == Incident.id)
        .where(
            Incident.source == "detector",
            Incident.status != "resolved",
            IncidentScope.service_id == service_id,
        )
        .order_by(Incident.started_at)
    )
    if region is not None:
        q = q.where(IncidentScope.region == region)
    return session.scalars(q).first()


def apply_events(
    session: Session,
    events: list[ServiceEvent],
    *,
    severity: str = "major",
    activity: Activity | None = None,
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
                    widen(
                        session,
                        current.id,
                        [Scope(ev.service_id, ev.region)],
                        activity=activity,
                        now=ev.opened_at,
                    )
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
    ctx: Context,
    *,
    as_of: datetime | None = None,
    params: ServiceParams | None = None,
    since: datetime | None = None,
) -> list[tuple[str, int]]:
    """Read ``service_metric`` signals up to ``as_of`` from the signal store and apply the events.

    ``since`` leaves out episodes that were over before it: a live loop started on a store full of history
    must not tell customers about an outage that ended weeks ago (``forewarn incidents detect`` replays all).
    With ``since``, only the history that can still matter is read (:func:`read_start`), so a pass costs the
    same on the first day and after a year.
    """
    as_of = utc(as_of)
    p = params or ServiceParams()
    start = None
    if since is not None:
        since = utc(since)
        with transaction(ctx.engine) as s:
            start = read_start(s, since, p)
    frame = ctx.signals.read("service_metric", start=start, end=as_of)
    events = service_events(frame, p, as_of, read_maintenance(ctx, as_of))
    if since is not None:
        events = recent_episodes(events, since)
    with transaction(ctx.engine) as s:
        return apply_events(s, events, activity=usage_activity(ctx))


def read_maintenance(ctx: Context, as_of: datetime | None = None) -> list[MaintenanceWindow]:
    """The maintenance windows announced in the signal store up to ``as_of``, with the announced customers'
    regions from the state store's dependencies."""
    subs = ctx.signals.read("subscription", end=as_of)
    subs = subs.filter(pl.col("event_type") == "maintenance") if "event_type" in subs.columns else subs
    if subs.is_empty():
        return []
    services = subs["service_id"].drop_nulls().unique().to_list()
    with transaction(ctx.engine) as s:
        deps = s.execute(
            select(Dependency.customer_id, Dependency.service_id, Dependency.region).where(
                Dependency.service_id.in_(services)
            )
        ).all()
    schema = {"customer_id": pl.String, "service_id": pl.String, "region": pl.String}
    return maintenance_windows(subs, pl.DataFrame(deps, schema=schema, orient="row"))


def read_start(session: Session, since: datetime, params: ServiceParams) -> datetime:
    """The earliest reading a pass acting on episodes after ``since`` needs.

    The scan of a series must start in calm water, before any episode it might still act on: before ``since``
    and before the start of every detector incident still open or resolved after ``since`` (its episode's
    frozen level and its key, the detection time, come from there), by the baseline's reach (``tail_periods``)
    plus a day's margin, so that the scan finds the same episodes as a scan of all history.
    """
    earliest = session.execute(
        select(func.min(Incident.started_at)).where(
            Incident.source == "detector",
            (Incident.resolved_at.is_(None)) | (Incident.resolved_at >= since),
        )
    ).scalar_one_or_none()
    first = min(since, utc(earliest)) if earliest is not None else since
    return first - tail_periods(params.usage_params()) * parse_duration(params.every) - READ_MARGIN


def recent_episodes(events: list[ServiceEvent], since: datetime) -> list[ServiceEvent]:
    """``events`` without the episodes (open and resolve) whose resolve came before ``since``.

    >>> from datetime import UTC, datetime
    >>> t = lambda h: datetime(2026, 3, 1, h, tzinfo=UTC)
    >>> old = [ServiceEvent("open", "tv", "north", t(1), t(1)), ServiceEvent("resolve", "tv", "north", t(2), t(1))]
    >>> new = [ServiceEvent("open", "tv", "north", t(5), t(5))]
    >>> [(e.kind, e.ts.hour) for e in recent_episodes(old + new, since=t(3))]
    [('open', 5)]
    """
    over = {(e.service_id, e.region, e.opened_at) for e in events if e.kind == "resolve" and e.ts < since}
    return [e for e in events if (e.service_id, e.region, e.opened_at) not in over]
