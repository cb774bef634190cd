"""The data behind each dashboard page, as JSON-ready dicts (the HTML pages and ``/v1/metrics/...`` share it).

Every query is bounded: aggregates run on indexed columns and lists are limited, so a page costs about the
same with 5k customers as with 50M.

>>> import tempfile
>>> from forewarn.state.db import upgrade, open_store
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
>>> upgrade(url)
>>> incidents_view(open_store(url))
{'incidents': []}
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from forewarn.measure.metrics import GUARDRAIL_STATUSES, Period, SignalReader, outcome_metrics
from forewarn.signals.schema import KINDS
from forewarn.state import audit
from forewarn.state.db import transaction
from forewarn.state.models import (
    AffectedCustomer,
    Customer,
    Finding,
    Incident,
    IncidentScope,
    OutboxMessage,
    Ticket,
)

log = logging.getLogger(__name__)

customers_t = Customer.__table__
incidents_t = Incident.__table__
scopes_t = IncidentScope.__table__
affected_t = AffectedCustomer.__table__
findings_t = Finding.__table__
outbox_t = OutboxMessage.__table__
tickets_t = Ticket.__table__

QUEUED = ("pending", "sending", "failed")  # failed will be retried
OUTBOX_STATUSES = ("pending", "sending", "sent", "failed", "dead", *GUARDRAIL_STATUSES)
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


class NotFound(LookupError):
    """The thing asked for does not exist."""


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _row(r: Any) -> dict[str, Any]:
    return {k: _iso(v) for k, v in r._mapping.items()}


def _progress(conn: sa.Connection, ids: list[int]) -> dict[int, dict[str, int]]:
    """Per incident: affected customers, and customers whose notice was delivered / queued / failed / held back."""
    out = {
        i: {"affected": 0, "queued": 0, "delivered": 0, "failed": 0, "held_back": 0, "tickets": 0}
        for i in ids
    }
    if not ids:
        return out
    a = affected_t
    for iid, n in conn.execute(
        sa.select(a.c.incident_id, sa.func.count()).where(a.c.incident_id.in_(ids)).group_by(a.c.incident_id)
    ):
        out[iid]["affected"] = int(n)
    # customers, not notices: an incident sends each customer several (the notice, updates, the all-clear).
    # A customer counts once, at their best state: delivered, else queued, else failed, else held back.
    o = outbox_t
    state = sa.case(
        (o.c.status == "sent", 0), (o.c.status.in_(QUEUED), 1), (o.c.status == "dead", 2), else_=3
    )
    best = (
        sa.select(o.c.incident_id, o.c.customer_id, sa.func.min(state).label("state"))
        .where(o.c.incident_id.in_(ids))
        .group_by(o.c.incident_id, o.c.customer_id)
        .subquery()
    )
    names = ("delivered", "queued", "failed", "held_back")
    for iid, st, n in conn.execute(
        sa.select(best.c.incident_id, best.c.state, sa.func.count()).group_by(
            best.c.incident_id, best.c.state
        )
    ):
        out[iid][names[int(st)]] += int(n)
    t = tickets_t
    for iid, n in conn.execute(
        sa.select(t.c.incident_id, sa.func.count()).where(t.c.incident_id.in_(ids)).group_by(t.c.incident_id)
    ):
        out[iid]["tickets"] = int(n)
    return out


def incidents_view(engine: sa.Engine, *, limit: int = 50) -> dict[str, Any]:
    """The most recent incidents, open ones first, with notice progress."""
    i = incidents_t
    is_open = sa.case((i.c.resolved_at.is_(None), 0), else_=1)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                i.c.id, i.c.title, i.c.status, i.c.severity, i.c.source, i.c.started_at, i.c.resolved_at
            )
            .order_by(is_open, i.c.started_at.desc(), i.c.id.desc())
            .limit(limit)
        ).all()
        progress = _progress(conn, [r.id for r in rows])
    return {"incidents": [_row(r) | {"progress": progress[r.id]} for r in rows]}


def incident_view(engine: sa.Engine, incident_id: int, *, limit: int = 200) -> dict[str, Any]:
    """One incident: its scope, updates, notice progress, notified customers and linked tickets."""
    i, a, o, t, c = incidents_t, affected_t, outbox_t, tickets_t, customers_t
    with engine.connect() as conn:
        inc = conn.execute(sa.select(i).where(i.c.id == incident_id)).first()
        if inc is None:
            raise NotFound(f"no incident {incident_id}")
        scopes = [
            _row(r)
            for r in conn.execute(
                sa.select(scopes_t.c.service_id, scopes_t.c.region, scopes_t.c.added_at).where(
                    scopes_t.c.incident_id == incident_id
                )
            )
        ]
        # the page of affected customers first (primary-key order), then only their notices
        shown = (
            sa.select(a.c.customer_id, a.c.region, a.c.service_id)
            .where(a.c.incident_id == incident_id)
            .order_by(a.c.customer_id)
            .limit(limit)
            .subquery()
        )
        # latest notice per shown customer: the highest outbox id for (incident, customer)
        last = (
            sa.select(o.c.customer_id, sa.func.max(o.c.id).label("oid"))
            .where(o.c.incident_id == incident_id, o.c.customer_id.in_(sa.select(shown.c.customer_id)))
            .group_by(o.c.customer_id)
            .subquery()
        )
        notices = [
            _row(r)
            for r in conn.execute(
                sa.select(
                    shown.c.customer_id,
                    c.c.name,
                    shown.c.region,
                    shown.c.service_id,
                    o.c.id.label("outbox_id"),
                    o.c.channel,
                    o.c.status,
                    o.c.reason,
                    o.c.sent_at,
                )
                .join_from(shown, c, c.c.id == shown.c.customer_id)
                .outerjoin(last, last.c.customer_id == shown.c.customer_id)
                .outerjoin(o, o.c.id == last.c.oid)
                .order_by(shown.c.customer_id)
            )
        ]
        tickets = [
            _row(r)
            for r in conn.execute(
                sa.select(t.c.id, t.c.customer_id, t.c.channel, t.c.subject, t.c.status, t.c.opened_at)
                .where(t.c.incident_id == incident_id)
                .order_by(t.c.opened_at.desc())
                .limit(limit)
            )
        ]
        progress = _progress(conn, [incident_id])[incident_id]
        updates = [
            _row(r)
            for r in conn.execute(
                sa.text(
                    "SELECT seq, status, message, created_at FROM incident_updates "
                    "WHERE incident_id = :i ORDER BY seq"
                ),
                {"i": incident_id},
            )
        ]
    return {
        "incident": _row(inc),
        "scopes": scopes,
        "updates": updates,
        "progress": progress,
        "customers": notices,
        "tickets": tickets,
    }


def findings_view(engine: sa.Engine, *, limit: int = 100, kind: str | None = None) -> dict[str, Any]:
    """Open findings ranked by severity then score x confidence, and the customers most at risk."""
    f, c = findings_t, customers_t
    sev = sa.case(*[(f.c.severity == s, r) for s, r in SEVERITY_RANK.items()], else_=len(SEVERITY_RANK))
    rank = f.c.score * f.c.confidence
    where = [f.c.status == "open"] + ([f.c.kind == kind] if kind else [])
    with engine.connect() as conn:
        findings = [
            _row(r)
            for r in conn.execute(
                sa.select(
                    f.c.id,
                    f.c.customer_id,
                    c.c.name,
                    f.c.kind,
                    f.c.condition,
                    f.c.severity,
                    f.c.score,
                    f.c.confidence,
                    f.c.explanation,
                    f.c.evidence,
                    f.c.first_detected_at,
                    f.c.last_detected_at,
                )
                .join_from(f, c, c.c.id == f.c.customer_id)
                .where(*where)
                .order_by(sev, rank.desc(), f.c.id)
                .limit(limit)
            )
        ]
        at_risk, long_gone = _at_risk(conn, where, rank, limit)
        kinds = [
            {"kind": k, "open": int(n)}
            for k, n in conn.execute(
                sa.select(f.c.kind, sa.func.count())
                .where(f.c.status == "open")
                .group_by(f.c.kind)
                .order_by(f.c.kind)
            )
        ]
    return {"findings": findings, "at_risk": at_risk, "long_gone": long_gone, "kinds": kinds}


# a customer silent (no use, no purchase) for this long has gone, not "at risk": there is nothing left to save
LONG_GONE_DAYS = 90


def long_gone(evidence: Any) -> bool:
    """True when a finding says the customer has been silent or away for ``LONG_GONE_DAYS`` or more.

    >>> long_gone({"zero_run": 145}), long_gone({"days_since_last": 12}), long_gone(None)
    (True, False, False)
    """
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except ValueError:
            return False
    if not isinstance(evidence, dict):
        return False
    days = evidence.get("zero_run") or evidence.get("days_since_last") or 0
    return isinstance(days, int | float) and days >= LONG_GONE_DAYS


def _at_risk(
    conn: sa.Connection, where: list[Any], rank: Any, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Customers ranked by their strongest open finding (score x confidence), with that finding's sentence as
    the reason; customers whose every open finding says they left long ago are counted apart, not ranked."""
    f, c = findings_t, customers_t
    rows = conn.execute(
        sa.select(
            f.c.customer_id,
            c.c.name,
            c.c.segment,
            f.c.kind,
            f.c.explanation,
            f.c.evidence,
            rank.label("risk"),
        )
        .join_from(f, c, c.c.id == f.c.customer_id)
        .where(*where)
        .order_by(rank.desc(), f.c.customer_id)
        .limit(limit * 20)
    ).all()
    by_customer: dict[str, dict[str, Any]] = {}
    gone: set[str] = set()
    for r in rows:
        if long_gone(r.evidence):
            gone.add(r.customer_id)
            continue
        entry = by_customer.get(r.customer_id)
        if entry is None:
            by_customer[r.customer_id] = entry = {
                "customer_id": r.customer_id,
                "name": r.name,
                "segment": r.segment,
                "open_findings": 0,
                "risk": float(r.risk or 0),
                "kind": r.kind,
                "why": r.explanation,
            }
        entry["open_findings"] += 1
    return list(by_customer.values())[:limit], len(gone - set(by_customer))


def _summarise(kind: str, r: dict[str, Any]) -> str:
    """One line a person can read for a signal row."""
    g = r.get
    match kind:
        case "usage":
            return f"{g('metric')} = {g('value')} {g('unit') or ''}".strip()
        case "purchase":
            amount = f" {g('amount')} {g('currency') or ''}" if g("amount") is not None else ""
            return f"{g('event_type')}{amount}".strip()
        case "invoice":
            return (
                f"invoice {g('invoice_id')} {g('status')}: total {g('total')} {g('currency') or ''}".strip()
            )
        case "telemetry":
            return f"device {g('device_id')} {g('attribute')} = {g('value')}"
        case "contact":
            return f"{g('channel')} contact: {g('subject') or g('text') or ''}".strip()
        case "feedback":
            rating = f" rating {g('rating')}" if g("rating") is not None else ""
            return f"{g('source')} {g('survey') or ''}{rating}: {g('text') or ''}".strip(" :")
        case "subscription":
            return f"{g('event_type')} due {g('due_date')}" if g("due_date") else str(g("event_type"))
        case "shipment":
            return f"shipment {g('shipment_id')} {g('status') or ''}, expected {g('expected_date')}"
    return kind


# Metered kinds arrive daily or faster: the timeline shows their latest readings, a chart shows the rest.
METERED = {"usage": "metric", "telemetry": "attribute"}
METERED_ON_TIMELINE = 3


def _customer_signals(
    signals: SignalReader | None, customer_id: str, since: datetime, per_kind: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """Timeline events from the signal store, and a daily series per metered metric."""
    if signals is None:
        return [], [], "the signal store is not available"
    out: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    for kind in KINDS:
        if kind == "service_metric":
            continue
        try:
            frame = signals.read(kind, start=since, customers=[customer_id])
        except Exception as e:  # a store without this kind's table yet, or a store error: show the rest
            log.warning("reading %s signals for %s failed: %s", kind, customer_id, e)
            continue
        if not isinstance(frame, pl.DataFrame):
            frame = pl.from_arrow(frame)  # type: ignore[assignment]
        if frame.height == 0:
            continue
        frame = frame.sort("ts", descending=True)
        key = METERED.get(kind)
        if key is not None:
            # usage adds up over a day; a telemetry reading is a level, so the day's last one stands
            agg = pl.col("value").sum() if kind == "usage" else pl.col("value").first()
            daily = (
                frame.group_by(key, pl.col("ts").dt.date().alias("day"))
                .agg(agg.alias("value"))
                .sort(key, "day")
            )
            for (name,), part in daily.group_by(key, maintain_order=True):
                pts = [(d.isoformat(), float(v)) for d, v in part.select("day", "value").iter_rows()]
                series.append({"kind": kind, "name": name, "points": pts, "mean": part["value"].mean()})
            frame = frame.group_by(key, maintain_order=True).head(METERED_ON_TIMELINE)
        for r in frame.head(per_kind).iter_rows(named=True):
            out.append({"at": r["ts"], "type": "signal", "kind": kind, "text": _summarise(kind, r)})
    return out, series, None


def _to_now(series: dict[str, Any], today: date) -> dict[str, Any]:
    """A usage series carried to ``today`` with zeros (a day without usage rows used nothing)."""
    if series["kind"] != "usage" or not series["points"]:
        return series
    last = date.fromisoformat(series["points"][-1][0])
    gap = [((last + timedelta(days=k)).isoformat(), 0.0) for k in range(1, (today - last).days + 1)]
    return series | {"points": series["points"] + gap}


def customer_view(
    engine: sa.Engine,
    customer_id: str,
    *,
    signals: SignalReader | None = None,
    days: int = 30,
    limit: int = 300,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One customer's story: signals, findings, notices and tickets on one timeline, newest first."""
    c, f, o, t = customers_t, findings_t, outbox_t, tickets_t
    with engine.connect() as conn:
        cust = conn.execute(sa.select(c).where(c.c.id == customer_id)).first()
        if cust is None:
            raise NotFound(f"no customer {customer_id!r}")
        events: list[dict[str, Any]] = []
        for r in conn.execute(
            sa.select(f).where(f.c.customer_id == customer_id).order_by(f.c.id.desc()).limit(limit)
        ):
            events.append(
                {
                    "at": r.first_detected_at,
                    "type": "finding",
                    "kind": r.kind,
                    "text": r.explanation,
                    "id": r.id,
                    "status": r.status,
                    "severity": r.severity,
                    "evidence": r.evidence,
                }
            )
        for r in conn.execute(
            sa.select(o).where(o.c.customer_id == customer_id).order_by(o.c.id.desc()).limit(limit)
        ):
            events.append(
                {
                    "at": r.sent_at or r.created_at,
                    "type": "notice",
                    "kind": r.channel,
                    "text": r.subject or r.topic,
                    "id": r.id,
                    "status": r.status,
                    "reason": r.reason,
                    "incident_id": r.incident_id,
                }
            )
        for r in conn.execute(
            sa.select(t).where(t.c.customer_id == customer_id).order_by(t.c.opened_at.desc()).limit(limit)
        ):
            events.append(
                {
                    "at": r.opened_at,
                    "type": "ticket",
                    "kind": r.channel,
                    "text": r.subject or r.text[:200],
                    "id": r.id,
                    "status": r.status,
                    "topic": r.topic,
                    "incident_id": r.incident_id,
                    "finding_id": r.finding_id,
                }
            )
        incidents = [
            _row(r)
            for r in conn.execute(
                sa.select(incidents_t.c.id, incidents_t.c.title, incidents_t.c.status, affected_t.c.added_at)
                .join_from(affected_t, incidents_t, incidents_t.c.id == affected_t.c.incident_id)
                .where(affected_t.c.customer_id == customer_id)
                .order_by(incidents_t.c.id.desc())
                .limit(50)
            )
        ]
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    sig, series, note = _customer_signals(signals, customer_id, since, per_kind=limit)
    series_note = None
    if not series and signals is not None:
        # silent lately: the longer view shows the use that stopped, which is the point of the page
        _, series, _ = _customer_signals(signals, customer_id, since - timedelta(days=5 * days), per_kind=0)
        if series:
            days = 6 * days
            series_note = f"no usage or readings in the last {days // 6} days; the charts show {days} days"
    # a silence shows as zeros up to today, not as a chart that simply ends
    series = [_to_now(x, (now or datetime.now(UTC)).date()) for x in series]
    events += sig
    events.sort(key=lambda e: e["at"], reverse=True)
    events = [{k: _iso(v) for k, v in e.items()} for e in events[:limit]]
    return {
        "customer": _row(cust),
        "incidents": incidents,
        "series": series,
        "series_note": series_note,
        "days": days,
        "timeline": events,
        "signals_note": note,
    }


def outbox_view(
    engine: sa.Engine,
    *,
    status: str | None = None,
    channel: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Outbox messages newest first, filtered by status and channel; counts by status for the filter bar.

    ``counts`` may be passed in (e.g. shared for a few seconds): counting every status reads a whole index.
    """
    o = outbox_t
    where = []
    if status:
        if status not in OUTBOX_STATUSES:
            raise ValueError(f"status must be one of {', '.join(OUTBOX_STATUSES)}, got {status!r}")
        where.append(o.c.status == status)
    if channel:
        where.append(o.c.channel == channel)
    if before_id is not None:
        where.append(o.c.id < before_id)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                o.c.id,
                o.c.customer_id,
                o.c.channel,
                o.c.topic,
                o.c.subject,
                o.c.status,
                o.c.reason,
                o.c.attempts,
                o.c.last_error,
                o.c.playbook,
                o.c.incident_id,
                o.c.created_at,
                o.c.sent_at,
            )
            .where(*where)
            .order_by(o.c.id.desc())
            .limit(limit)
        ).all()
        if counts is None:
            counts = outbox_counts(conn)
    return {
        "messages": [_row(r) for r in rows],
        "counts": counts,
        "filters": {"status": status, "channel": channel},
        "statuses": list(OUTBOX_STATUSES),
        "channels": ["email", "sms", "push", "webhook", "console"],
        "next_before_id": rows[-1].id if len(rows) == limit else None,
    }


def outbox_counts(conn: sa.Connection) -> dict[str, int]:
    """Outbox messages by status (an index-only count)."""
    o = outbox_t
    return {
        str(s): int(n) for s, n in conn.execute(sa.select(o.c.status, sa.func.count()).group_by(o.c.status))
    }


def retry_dead_letter(
    engine: sa.Engine,
    outbox_id: int,
    *,
    now: datetime | None = None,
    actor: str | None = None,
    ip: str | None = None,
) -> bool:
    """Put a dead letter back in the queue (status pending, due now). False when it is not a dead letter.

    The idempotency key is unchanged, so a receiver that did get an earlier attempt drops the duplicate.
    With ``actor``, the retry is written to the audit log in the same transaction.
    """
    o = outbox_t
    with transaction(engine) as s:
        res = s.execute(
            sa.update(o)
            .where(o.c.id == outbox_id, o.c.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now or datetime.now(UTC))
        )
        done = res.rowcount == 1
        if done and actor:
            audit.record(s, actor, "outbox.retried", f"outbox:{outbox_id}", ip=ip)
    return done


def _playbook_files(home: Path) -> list[dict[str, Any]]:
    folder = home / "playbooks"
    if not folder.is_dir() or not any(folder.glob("*.y*ml")):
        return []
    from forewarn.decide.playbooks import PlaybookError, load_playbooks

    try:
        pset = load_playbooks(folder)
    except PlaybookError as e:
        return [{"name": "(invalid playbook files)", "mode": "error", "error": str(e)}]
    return [
        {
            "name": p.name,
            "mode": p.mode,
            "kind": p.when.kind,
            "holdout": p.holdout,
            "description": p.description,
        }
        for p in pset.playbooks
    ]


def _backtest_reports(home: Path, limit: int = 20) -> list[dict[str, Any]]:
    folder = home / "backtests"
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            out.append({"file": p.name, "error": f"unreadable: {e}"})
            continue
        summary = (
            {k: v for k, v in data.items() if isinstance(v, int | float | str)}
            if isinstance(data, dict)
            else {}
        )
        out.append({"file": p.name, "summary": dict(list(summary.items())[:12])})
    return out


def playbooks_view(engine: sa.Engine, *, home: Path | None = None, limit: int = 50) -> dict[str, Any]:
    """Playbooks: mode (``<home>/playbooks/*.yaml``), decisions by status, recent decisions, backtests."""
    o = outbox_t
    with engine.connect() as conn:
        counts: dict[str, dict[str, int]] = {}
        for pb, status, n in conn.execute(
            sa.select(o.c.playbook, o.c.status, sa.func.count())
            .where(o.c.playbook.is_not(None))
            .group_by(o.c.playbook, o.c.status)
        ):
            counts.setdefault(pb, {})[status] = int(n)
        recent = [
            _row(r)
            for r in conn.execute(
                sa.select(
                    o.c.id, o.c.playbook, o.c.customer_id, o.c.channel, o.c.status, o.c.reason, o.c.created_at
                )
                .where(o.c.playbook.is_not(None))
                .order_by(o.c.id.desc())
                .limit(limit)
            )
        ]
    files = _playbook_files(home) if home else []
    names = sorted(set(counts) | {p["name"] for p in files})
    by_name = {p["name"]: p for p in files}
    playbooks = [
        {"name": n, "mode": by_name.get(n, {}).get("mode"), "decisions": counts.get(n, {})}
        | by_name.get(n, {})
        for n in names
    ]
    return {
        "playbooks": playbooks,
        "recent": recent,
        "backtests": _backtest_reports(home) if home else [],
    }


def latest_activity(engine: sa.Engine) -> datetime | None:
    """The time of the newest contact or outbox decision (simulated histories need not end today)."""
    with engine.connect() as conn:
        t = conn.execute(sa.select(sa.func.max(tickets_t.c.opened_at))).scalar_one()
        o = conn.execute(sa.select(sa.func.max(outbox_t.c.created_at))).scalar_one()
    found = [v for v in (t, o) if v is not None]
    return max(found) if found else None


def attention_now(engine: sa.Engine) -> dict[str, int]:
    """What needs attention now: open incidents and findings, queued messages, dead letters."""
    o = outbox_t
    with engine.connect() as conn:
        by_status = {
            str(s): int(n)
            for s, n in conn.execute(
                sa.select(o.c.status, sa.func.count())
                .where(o.c.status.in_(("pending", "sending", "failed", "dead")))
                .group_by(o.c.status)
            )
        }
        open_incidents = conn.execute(
            sa.select(sa.func.count()).where(incidents_t.c.resolved_at.is_(None))
        ).scalar_one()
        open_findings = conn.execute(
            sa.select(sa.func.count()).where(findings_t.c.status == "open")
        ).scalar_one()
    return {
        "open_incidents": int(open_incidents),
        "open_findings": int(open_findings),
        "queued": sum(by_status.get(s, 0) for s in QUEUED),
        "dead_letters": by_status.get("dead", 0),
    }


def overview_view(
    engine: sa.Engine,
    period: Period,
    *,
    signals: SignalReader | None = None,
    bucket_size: str = "day",
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The outcome metrics for ``period`` (computed unless given) plus what needs attention now."""
    if metrics is None:
        metrics = outcome_metrics(engine, period, signals=signals, bucket_size=bucket_size)
    return {"now": attention_now(engine), "metrics": metrics}
