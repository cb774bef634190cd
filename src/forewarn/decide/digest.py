"""Digests: what the fatigue budget folded away goes out later as one message, when the budget has room.

With ``budget.overflow: digest`` a message that does not fit is recorded as ``suppressed`` with the reason
"... folded into the digest". :func:`send_digests` gathers, per customer, the folded messages of the last few
budget windows that no digest carried yet, and decides one digest through the same guardrails (budget at
``normal`` priority, consent for topic ``digest``, quiet hours). When it may go, it is enqueued (template
``playbook_digest``, the folded explanations as ``items``) and the folded rows are marked with its key; when
it may not, nothing changes and a later run tries again. One digest per customer per day at most.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from forewarn.context import Context
from forewarn.decide.engine import customer_views, guardrail_state
from forewarn.decide.guardrails import Candidate, Policy, decide
from forewarn.decide.playbooks import PlaybookSet, load_playbooks
from forewarn.decide.unsubscribe import unsubscribe_url
from forewarn.state.db import transaction
from forewarn.state.models import OutboxMessage
from forewarn.timeutil import utc

TOPIC = "digest"
TEMPLATE = "playbook_digest"
# folded messages older than this many budget windows are stale: no digest carries them any more
LOOKBACK_WINDOWS = 4


def send_digests(ctx: Context, playbooks: PlaybookSet | str, now: datetime | None = None) -> int:
    """Enqueue the digests that fit now; returns how many were enqueued."""
    from forewarn.deliver.outbox import enqueue

    pset = playbooks if isinstance(playbooks, PlaybookSet) else load_playbooks(playbooks)
    now = utc(now)
    window = pset.guardrails.budget.window
    policy = Policy.from_guardrails(pset.guardrails, ctx.settings)
    link_secret = ctx.secrets.links.current  # read before this transaction takes SQLite's write lock
    with transaction(ctx.engine) as session:
        q = select(OutboxMessage).where(
            OutboxMessage.status == "suppressed",
            OutboxMessage.reason.like("%folded into the digest%"),
            OutboxMessage.created_at >= now - LOOKBACK_WINDOWS * window,
        )
        folded: dict[str, list[OutboxMessage]] = defaultdict(list)
        for row in session.execute(q).scalars():
            if not (row.payload or {}).get("digest"):
                folded[row.customer_id].append(row)
        if not folded:
            return 0
        ids = sorted(folded)
        views, _attrs, prefs = customer_views(session, ids, now, case_idle=ctx.settings.ticket_idle_close)
        day = now.date().isoformat()
        candidates = [
            Candidate(
                customer_id=cid,
                playbook="digest",
                mode="live",
                action="notify",
                kind="digest",
                condition="digest",
                topic=TOPIC,
                priority="normal",
                channels=tuple(dict.fromkeys([*prefs.get(cid, []), "email"])),
                at=now,
                episode=day,
                confidence=1.0,
                score=float(len(rows)),
            )
            for cid, rows in folded.items()
        ]
        state = guardrail_state(session, ids, now, window)
        messages: list[dict[str, Any]] = []
        for d in decide(candidates, views, policy, state):
            if d.status not in ("pending", "deferred"):
                continue
            cid = d.candidate.customer_id
            key = f"digest:{cid}:{day}"
            items = [(r.payload or {}).get("explanation") or r.topic for r in folded[cid]]
            messages.append(
                {
                    "idempotency_key": key,
                    "customer_id": cid,
                    "channel": d.channel,
                    "address": d.address,
                    "topic": TOPIC,
                    "thread_key": f"digest:{cid}",
                    "priority": "normal",
                    "reason": d.reason,
                    "next_attempt_at": d.send_at,
                    "playbook": "digest",
                    "payload": {
                        "template": TEMPLATE,
                        "items": items,
                        "unsubscribe_url": unsubscribe_url(
                            ctx.settings.public_url, link_secret, cid, d.channel or "email", TOPIC
                        ),
                    },
                }
            )
            for r in folded[cid]:
                r.payload = {**(r.payload or {}), "digest": key}
        return enqueue(session, messages, now=now)
