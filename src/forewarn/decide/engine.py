"""The live decision run: open findings (and incidents) -> playbooks -> guardrails -> outbox.

``run_playbooks(ctx, playbooks, as_of, now)`` reads open findings and open incidents from the state store,
rebuilds the guardrail state from the outbox (the single record of what was sent, incident notices included),
calls the same :func:`forewarn.decide.guardrails.decide` the backtest uses, and writes every decision back to
the outbox in one transaction. Re-running is a no-op: each decision's idempotency key is
``pb:<playbook>:<customer>:<condition>:<episode>:<action>``.

How decisions land in the outbox:

- sent now: ``pending``; deferred for quiet hours: ``pending`` with ``next_attempt_at`` at their end and the
  reason ``deferred: ...`` (the delivery worker claims ``pending`` rows when due, so the message really goes);
- ``suppressed``, ``held`` (the approval queue; :func:`approve` releases one), ``shadow``, ``control``:
  recorded with their reason, never claimed by the worker;
- tasks: rows with channel ``task``, status ``open``, address the assignee, ``next_attempt_at`` the due time
  (one table for everything a playbook did keeps the record in one place; no schema change);
- webhooks: rows with channel ``webhook``, address the automation's URL and the JSON body (the worker posts
  them).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session

from forewarn.context import Context
from forewarn.decide.candidates import first_per_episode, match, to_candidates
from forewarn.decide.guardrails import (
    COUNTED,
    CustomerView,
    Decision,
    GuardrailState,
    Policy,
    decide,
    hold_mass_sends,
)
from forewarn.decide.playbooks import OUTAGE_KIND, PlaybookSet, load_playbooks, topic_of
from forewarn.decide.unsubscribe import unsubscribe_url
from forewarn.deliver import consent
from forewarn.deliver.channels.base import addresses_of
from forewarn.state import audit
from forewarn.state.db import transaction
from forewarn.state.models import (
    AffectedCustomer,
    Customer,
    Finding,
    Incident,
    OutboxMessage,
)
from forewarn.state.tickets import DEFAULT_IDLE_CLOSE, open_case_topics
from forewarn.timeutil import utc

INCIDENT_NOTICES = "incident-notices"
_CHUNK = 900


@dataclass
class RunSummary:
    """What one run decided, per playbook and status, and per guardrail."""

    as_of: datetime
    now: datetime
    findings: int = 0
    candidates: int = 0
    enqueued: int = 0
    by_playbook: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_guardrail: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "now": self.now.isoformat(),
            "findings": self.findings,
            "candidates": self.candidates,
            "enqueued": self.enqueued,
            "by_playbook": {k: dict(v) for k, v in sorted(self.by_playbook.items())},
            "by_guardrail": dict(self.by_guardrail),
        }


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def idempotency_key(d: Decision) -> str:
    c = d.candidate
    return f"pb:{c.playbook}:{c.customer_id}:{c.condition}:{c.episode}:{c.action_index}"


# ---- reading the state store ----


def _finding_frame(session: Session, kinds: set[str], as_of: datetime, now: datetime) -> pl.DataFrame:
    rows = session.execute(
        select(Finding).where(
            Finding.status == "open", Finding.kind.in_(sorted(kinds)), Finding.last_detected_at <= as_of
        )
    ).scalars()
    recs = [
        {
            "customer_id": f.customer_id,
            "kind": f.kind,
            "condition": f.condition,
            "ts": as_of,
            "score": f.score,
            "confidence": f.confidence,
            "severity": f.severity,
            "topic": (f.evidence or {}).get("topic") or topic_of(f.kind, f.condition),
            "explanation": f.explanation,
            "evidence": json.dumps(f.evidence or {}),
            "episode": f.first_detected_at,
            "at": now,
            "finding_id": f.id,
            "incident_id": None,
        }
        for f in rows
    ]
    return _frame(recs)


def _incident_frame(session: Session, as_of: datetime, now: datetime) -> pl.DataFrame:
    """Affected customers of open incidents as findings of kind ``outage`` (condition ``incident:<id>``)."""
    q = (
        select(AffectedCustomer, Incident)
        .join(Incident, Incident.id == AffectedCustomer.incident_id)
        .where(Incident.resolved_at.is_(None), Incident.status != "resolved", Incident.started_at <= as_of)
    )
    recs = [
        {
            "customer_id": a.customer_id,
            "kind": OUTAGE_KIND,
            "condition": f"incident:{i.id}",
            "ts": as_of,
            "score": 1.0,
            "confidence": 1.0,
            "severity": "critical" if i.severity in ("critical", "major") else "warning",
            "topic": "outage",
            "explanation": i.public_message or i.title,
            "evidence": json.dumps({"service_id": a.service_id, "region": a.region}),
            "episode": i.started_at,
            "at": now,
            "finding_id": None,
            "incident_id": i.id,
        }
        for a, i in session.execute(q)
    ]
    return _frame(recs)


_SCHEMA = {
    "customer_id": pl.String,
    "kind": pl.String,
    "condition": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "score": pl.Float64,
    "confidence": pl.Float64,
    "severity": pl.String,
    "topic": pl.String,
    "explanation": pl.String,
    "evidence": pl.String,
    "episode": pl.Datetime("us", "UTC"),
    "at": pl.Datetime("us", "UTC"),
    "finding_id": pl.Int64,
    "incident_id": pl.Int64,
}


def _frame(recs: list[dict[str, Any]]) -> pl.DataFrame:
    for r in recs:
        r["episode"] = utc(r["episode"])
    return pl.DataFrame(recs, schema=_SCHEMA)


def customer_views(
    session: Session, ids: Sequence[str], at: datetime, *, case_idle: timedelta = DEFAULT_IDLE_CLOSE
) -> tuple[dict[str, CustomerView], dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Guardrail views, matching attributes and preferred channels of ``ids``; open cases as of ``at``."""
    views: dict[str, CustomerView] = {}
    attrs: dict[str, dict[str, Any]] = {}
    prefs: dict[str, list[str]] = {}
    rules = consent.load_rules(session, ids)
    tickets = open_case_topics(session, ids, at, case_idle)
    for chunk in _chunks(ids):
        for c in session.execute(select(Customer).where(Customer.id.in_(chunk))).scalars():
            views[c.id] = CustomerView(
                timezone=c.timezone or "UTC",
                addresses=addresses_of(c),
                consent=rules.get(c.id, {}),
                open_ticket_topics=frozenset(tickets.get(c.id, ())),
            )
            attrs[c.id] = {
                "segment": c.segment,
                "plan": c.plan,
                "region": c.region,
                "attributes": c.attributes,
            }
            prefs[c.id] = list(c.channels or [])
    return views, attrs, prefs


def guardrail_state(
    session: Session, ids: Sequence[str], now: datetime, lookback: timedelta
) -> GuardrailState:
    """The guardrail state of ``ids`` from the outbox: budget use, threads, cooldowns, decided keys."""
    state = GuardrailState()
    since = now - lookback
    cols = (
        OutboxMessage.idempotency_key,
        OutboxMessage.customer_id,
        OutboxMessage.channel,
        OutboxMessage.status,
        OutboxMessage.playbook,
        OutboxMessage.thread_key,
        OutboxMessage.payload,
        OutboxMessage.next_attempt_at,
        OutboxMessage.sent_at,
        OutboxMessage.incident_id,
    )
    for chunk in _chunks(ids):
        q = select(*cols).where(
            OutboxMessage.customer_id.in_(chunk),
            (OutboxMessage.created_at >= since) | (OutboxMessage.next_attempt_at >= since),
        )
        for r in session.execute(q):
            when = utc(r.sent_at or r.next_attempt_at)
            payload = r.payload or {}
            facing = r.channel != "task" and not payload.get("automation")
            if facing and r.status in COUNTED:
                state.record_send(r.customer_id, when)
            if r.playbook and "episode" in payload:
                c = payload.get("condition", "")
                state.decided.add(
                    (r.playbook, r.customer_id, c, payload["episode"], payload.get("action", 0))
                )
                if facing and r.status in (*COUNTED, "control", "shadow"):
                    state.threads[(r.customer_id, c, payload["episode"])] = r.playbook
                    last = state.last_sent.get((r.playbook, r.customer_id))
                    state.last_sent[(r.playbook, r.customer_id)] = when if last is None else max(last, when)
            elif r.incident_id is not None and facing and r.status in COUNTED:
                # incident notices thread the incident: an outage playbook does not message it again
                state.threads[(r.customer_id, f"incident:{r.incident_id}", "*")] = INCIDENT_NOTICES
    return state


# ---- writing decisions ----


def outbox_row(d: Decision, pset: PlaybookSet, public_url: str, link_secret: str) -> dict[str, Any]:
    """The outbox row recording decision ``d`` (its unsubscribe link under ``public_url``, signed with
    ``link_secret``)."""
    c = d.candidate
    pb = pset.by_name(c.playbook)
    action = pb.then[c.action_index]
    ref = c.ref or {}
    payload: dict[str, Any] = {
        "playbook": c.playbook,
        "kind": c.kind,
        "condition": c.condition,
        "episode": c.episode,
        "action": c.action_index,
        "score": c.score,
        "confidence": c.confidence,
        "explanation": ref.get("explanation") or "",
        "finding_id": ref.get("finding_id"),
        "incident_id": ref.get("incident_id"),
        "guardrail": d.guardrail,
        "expires_at": c.expires_at.isoformat() if c.expires_at else None,
    }
    row: dict[str, Any] = {
        "idempotency_key": idempotency_key(d),
        "customer_id": c.customer_id,
        "topic": c.topic,
        "thread_key": c.thread_key,
        "priority": c.priority,
        "status": "pending" if d.status == "deferred" else d.status,
        "reason": (d.reason or "")[:256] or None,
        "next_attempt_at": d.send_at,
        "finding_id": ref.get("finding_id"),
        "incident_id": ref.get("incident_id"),
        "playbook": c.playbook,
    }
    if action.notify is not None:
        channel = d.channel or (c.channels[0] if c.channels else "email")
        payload["template"] = action.notify.template
        payload["unsubscribe_url"] = unsubscribe_url(public_url, link_secret, c.customer_id, channel, c.topic)
        row.update(channel=channel, address=d.address, payload=payload)
    elif action.task is not None:
        t = action.task
        payload.update(title=t.title, assignee=t.assignee, due_at=(c.at + t.due).isoformat())
        if t.template:
            payload["template"] = t.template
        row.update(
            channel="task",
            address=t.assignee,
            subject=t.title,
            body=f"{t.title}\n\nCustomer {c.customer_id}: {payload['explanation']}\n",
            payload=payload,
            next_attempt_at=c.at + t.due,
        )
    else:
        w = action.webhook
        assert w is not None
        doc = {
            **w.payload,
            "customer_id": c.customer_id,
            "playbook": c.playbook,
            "condition": c.condition,
            "kind": c.kind,
            "finding_id": ref.get("finding_id"),
            "incident_id": ref.get("incident_id"),
        }
        payload["automation"] = (
            True  # a call to a system, not a message to the customer: no consent, no budget
        )
        row.update(
            channel="webhook",
            address=w.url,
            subject=f"{c.playbook}: {c.condition}",
            body=json.dumps(doc, sort_keys=True, default=str),
            payload=payload,
        )
    return row


def run_playbooks(
    ctx: Context,
    playbooks: PlaybookSet | str | Path,
    as_of: datetime | None = None,
    now: datetime | None = None,
) -> RunSummary:
    """Decide on every open finding and incident the playbooks cover, and record it all in the outbox.

    ``as_of`` is the data time (findings last detected after it are ignored); ``now`` the wall-clock time of
    the decision (quiet hours, budget). Both default to the current time. Returns a :class:`RunSummary`.
    """
    from forewarn.deliver.outbox import enqueue

    pset = playbooks if isinstance(playbooks, PlaybookSet) else load_playbooks(playbooks)
    now = utc(now)
    as_of = utc(as_of) if as_of is not None else now
    summary = RunSummary(as_of=as_of, now=now)
    active = pset.active()
    if not active:
        return summary
    policy = Policy.from_guardrails(pset.guardrails, ctx.settings)
    kinds = {p.when.kind for p in active}
    link_secret = ctx.secrets.links.current  # read before this transaction takes SQLite's write lock
    with transaction(ctx.engine) as session:
        frames = []
        if kinds - {OUTAGE_KIND}:
            frames.append(_finding_frame(session, kinds - {OUTAGE_KIND}, as_of, now))
        if OUTAGE_KIND in kinds:
            frames.append(_incident_frame(session, as_of, now))
        findings = pl.concat(frames, how="vertical")
        summary.findings = findings.height
        ids = sorted(set(findings["customer_id"].to_list()))
        views, attrs, prefs = customer_views(session, ids, now, case_idle=ctx.settings.ticket_idle_close)
        matches = first_per_episode(match(findings, active, attrs))
        by_name = {p.name: p for p in active}
        candidates = to_candidates(
            matches, by_name, min_confidence=pset.guardrails.min_confidence, preferred_channels=prefs
        )
        summary.candidates = len(candidates)
        lookback = max([pset.guardrails.budget.window, *(p.cooldown for p in active)])
        state = guardrail_state(session, sorted({c.customer_id for c in candidates}), now, lookback)
        decisions = decide(candidates, views, policy, state)
        known = session.execute(select(func.count()).select_from(Customer)).scalar_one()
        mass = pset.guardrails.mass_send
        decisions = hold_mass_sends(decisions, known, mass.share, mass.minimum)
        rows = [outbox_row(d, pset, ctx.settings.public_url, link_secret) for d in decisions]
        summary.enqueued = enqueue(session, rows, now=now)
    for d in decisions:
        summary.by_playbook[d.candidate.playbook][d.status] += 1
        if d.guardrail:
            summary.by_guardrail[d.guardrail] += 1
    return summary


def approve(
    ctx: Context,
    outbox_id: int,
    now: datetime | None = None,
    *,
    actor: str | None = None,
    ip: str | None = None,
) -> bool:
    """Release a ``held`` decision from the approval queue: it becomes ``pending`` (sent when due)."""
    return settle_held(ctx, ids=[outbox_id], approve_all=True, now=now, actor=actor, ip=ip) == 1


def settle_held(
    ctx: Context,
    playbook: str | None = None,
    *,
    ids: Sequence[int] | None = None,
    approve_all: bool,
    now: datetime | None = None,
    actor: str | None = None,
    ip: str | None = None,
) -> int:
    """Release (``approve_all``) or reject the held decisions ``ids``, or every one of ``playbook``, in one
    statement; returns how many. Released rows become ``pending`` (sent when due); rejected ones
    ``suppressed``; the old reason stays in the new one. A tripped circuit breaker is settled by playbook: one
    decision for the whole run. With ``actor`` (who decided; see ``forewarn.state.audit``) the decision is
    recorded in the audit log in the same transaction."""
    if (playbook is None) == (ids is None):
        raise ValueError("settle_held needs a playbook or ids, not both")
    status, word = ("pending", "approved") if approve_all else ("suppressed", "rejected")
    which = OutboxMessage.playbook == playbook if ids is None else OutboxMessage.id.in_(list(ids))
    old = func.coalesce(OutboxMessage.reason, literal("held"))
    with transaction(ctx.engine) as session:
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == "held", which)
            .values(
                status=status,
                reason=func.substr(literal(f"{word} (was: ") + old + literal(")"), 1, 256),
                next_attempt_at=utc(now),
            )
        )
        settled = max(result.rowcount or 0, 0)
        if actor is not None and settled:
            target = f"playbook:{playbook}" if ids is None else f"outbox:{','.join(map(str, ids))}"
            audit.record(
                session, actor, f"playbook.{word}", target[:255], ip=ip, detail={"decisions": settled}
            )
        return settled


def held(ctx: Context, limit: int = 100) -> list[Mapping[str, Any]]:
    """The approval queue: held decisions, oldest first."""
    with transaction(ctx.engine) as session:
        q = (
            select(OutboxMessage.id, OutboxMessage.customer_id, OutboxMessage.playbook, OutboxMessage.reason)
            .where(OutboxMessage.status == "held")
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        return [dict(r._mapping) for r in session.execute(q)]
