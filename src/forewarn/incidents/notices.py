"""The notice series: one thread per customer per incident, fanned out to the outbox as a set query.

Each public step of an incident (the opening notice, every public update, the all-clear) becomes one outbox
row per affected customer, inserted by a single ``INSERT .. SELECT``. The row names its template in
``payload.template``; rendering happens at delivery, so fan-out to a million customers writes only small rows.

- channel: the first of ``customers.channels`` whose consent for the topic is not withheld and for which the
  customer has an address (email -> ``email``; sms, voice, whatsapp -> ``phone``; other channels need none).
  Consent is read per channel with the topic's own row winning over the ``*`` row; no row means not withheld
  (outage notices are service messages). The delivery worker checks consent again at send time.
- no usable channel: the row is still inserted, as ``suppressed`` with the reason (recorded, not dropped).
- idempotency key ``incident:<id>:u<seq>:<customer>:<channel>``: re-running a fan-out inserts nothing new.
- thread key ``incident:<id>:<customer>``; priority ``critical`` for critical and major incidents.

>>> idempotency_key(7, 2, "C1", "email")
'incident:7:u2:C1:email'
>>> thread_key(7, "C1")
'incident:7:C1'
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from forewarn.incidents._db import bulk_writes, dialect, sql
from forewarn.timeutil import utc

TOPIC = "outage"
TEMPLATE_OPEN = "incident_open"
TEMPLATE_UPDATE = "incident_update"
TEMPLATE_RESOLVED = "incident_resolved"
TEMPLATE_REPLY = "incident_reply"

# which customer column holds the address a channel needs (channels not listed need no address)
ADDRESS_COLUMNS = {"email": "email", "sms": "phone", "voice": "phone", "whatsapp": "phone"}


def idempotency_key(incident_id: int, seq: int, customer_id: str, channel: str) -> str:
    return f"incident:{incident_id}:u{seq}:{customer_id}:{channel}"


def thread_key(incident_id: int, customer_id: str) -> str:
    return f"incident:{incident_id}:{customer_id}"


def priority_for(severity: str) -> str:
    """Incident notices are critical for critical and major incidents, high otherwise."""
    return "critical" if severity in ("critical", "major") else "high"


def template_for(seq: int, status: str) -> str:
    """The template of a step: opening notice, update, or all-clear."""
    if status == "resolved":
        return TEMPLATE_RESOLVED
    return TEMPLATE_OPEN if seq == 0 else TEMPLATE_UPDATE


def _address_case(channel_expr: str, customer: str) -> str:
    whens = " ".join(f"WHEN '{ch}' THEN {customer}.{col}" for ch, col in ADDRESS_COLUMNS.items())
    return f"CASE {channel_expr} {whens} ELSE NULL END"


def _has_address(channel_expr: str, customer: str) -> str:
    """True when the channel needs no address or the customer has one for it (a null channel has none).
    A simple CASE reads the channel once (on PostgreSQL each read of ``channels ->> 0`` parses the JSON)."""
    whens = " ".join(
        f"WHEN '{ch}' THEN COALESCE({customer}.{col}, '') <> ''" for ch, col in ADDRESS_COLUMNS.items()
    )
    return f"(CASE {channel_expr} {whens} ELSE {channel_expr} IS NOT NULL END)"


def _fan_out_sql(db: str, incident_id: int, seq: int, *, new_since: bool, fresh: bool) -> str:
    """The INSERT .. SELECT for one step, written for SQLite's or PostgreSQL's JSON functions.

    The common case (the first preferred channel has an address and consent is not withheld) is decided by
    joins: the customer's consent rows for that channel come in by two outer joins (the topic's row wins over
    ``*``), which the planner can run as merge or hash joins instead of two index probes per customer. Only
    the rest walk the channel list. ``fresh``: no row of this step exists yet, so no conflict check is needed.
    """
    if db == "postgresql":
        elements = "json_array_elements_text(q.channels) WITH ORDINALITY AS j(value, ord)"
        elements_p = "json_array_elements_text(p.channels) AS j(value)"
        order = "j.ord"
        payload = "CAST(:payload AS json)"
        granted_default = "true"
        fence = "OFFSET 0"
    else:
        elements = "json_each(q.channels) AS j"
        elements_p = "json_each(p.channels) AS j"
        order = "j.key"
        payload = ":payload"
        granted_default = "1"
        fence = "LIMIT -1 OFFSET 0"

    def consent(customer: str, channel: str) -> str:
        # two primary-key probes, the topic's row first (``granted`` is NOT NULL, so COALESCE falls through
        # only when a row is missing)
        probe = (
            f"(SELECT k.granted FROM consents k WHERE k.customer_id = {customer} AND k.channel = {channel} "
        )
        return f"COALESCE({probe}AND k.topic = :topic), {probe}AND k.topic = '*'), {granted_default})"

    walk = (
        f"(SELECT j.value FROM {elements} WHERE {consent('q.customer_id', 'j.value')} "
        f"AND {_has_address('j.value', 'q')} ORDER BY {order} LIMIT 1)"
    )
    first_ok = (
        f"q.first_channel IS NOT NULL AND {_has_address('q.first_channel', 'q')} "
        f"AND COALESCE(kt.granted, ks.granted, {granted_default})"
    )
    any_consent = f"EXISTS (SELECT 1 FROM {elements_p} WHERE {consent('p.customer_id', 'j.value')})"
    chosen = "COALESCE(p.channel, p.first_channel, 'none')"
    added = "AND a.added_at >= :since" if new_since else ""
    conflict = "" if fresh else "ON CONFLICT (idempotency_key) DO NOTHING"
    # The OFFSETs fence the subqueries: the first channel (a JSON read) and the channel pick are computed once
    # per row, not once per use (the planner would otherwise inline them into every expression that uses
    # them), and the rows stream through (nothing is materialised).
    return f"""
INSERT INTO outbox (idempotency_key, customer_id, channel, address, topic, thread_key, priority, subject,
                    body, payload, status, reason, attempts, next_attempt_at, incident_id, created_at)
SELECT 'incident:{incident_id}:u{seq}:' || p.customer_id || ':' || {chosen},
       p.customer_id, {chosen}, {_address_case("p.channel", "p")}, :topic,
       'incident:{incident_id}:' || p.customer_id, :priority, '', '', {payload},
       CASE WHEN p.channel IS NULL THEN 'suppressed' ELSE 'pending' END,
       CASE WHEN p.channel IS NOT NULL THEN NULL
            WHEN p.first_channel IS NULL THEN 'no contact channel on file'
            WHEN {any_consent} THEN 'no address on file for any channel with consent'
            ELSE 'consent withheld for topic ' || :topic || ' on every preferred channel' END,
       0, :now, {incident_id}, :now
FROM (
    SELECT q.*, CASE WHEN {first_ok} THEN q.first_channel ELSE {walk} END AS channel
    FROM (
        SELECT c.id AS customer_id, c.email AS email, c.phone AS phone, c.channels AS channels,
               (c.channels ->> 0) AS first_channel
        FROM affected_customers a JOIN customers c ON c.id = a.customer_id
        WHERE a.incident_id = {incident_id} {added}
        {fence}
    ) q
    LEFT JOIN consents kt ON kt.customer_id = q.customer_id AND kt.channel = q.first_channel
                         AND kt.topic = :topic
    LEFT JOIN consents ks ON ks.customer_id = q.customer_id AND ks.channel = q.first_channel
                         AND ks.topic = '*'
    {fence}
) p
WHERE true
{conflict}
"""


def _step_exists(session: Session, incident_id: int, seq: int) -> bool:
    """Whether any notice of this step is in the outbox: one range probe on the idempotency key's index (keys
    compare byte by byte on both stores, so the step's keys are exactly those between the two bounds)."""
    prefix = f"incident:{int(incident_id)}:u{int(seq)}:"
    return (
        session.execute(
            text("SELECT 1 FROM outbox WHERE idempotency_key >= :lo AND idempotency_key < :hi LIMIT 1"),
            {"lo": prefix, "hi": prefix[:-1] + ";"},
        ).first()
        is not None
    )


def fan_out(
    session: Session,
    incident_id: int,
    seq: int,
    *,
    template: str,
    severity: str = "major",
    added_since: datetime | None = None,
    extra: dict[str, object] | None = None,
    now: datetime | None = None,
) -> int:
    """Queue step ``seq`` of incident ``incident_id`` for its affected customers; return rows inserted.

    ``added_since`` limits it to customers affected since then (the catch-up after widening). Rows that
    already exist (same idempotency key) are left alone, so calling this twice queues nothing the second time.
    """
    now = utc(now)
    payload = {"template": template, "incident_id": incident_id, "seq": seq, **(extra or {})}
    # a step's first fan-out inserts plainly; only a repeat (or a catch-up into a step others already got)
    # pays for the conflict check on every row
    fresh = not _step_exists(session, incident_id, seq)
    statement = sql(
        _fan_out_sql(
            dialect(session), int(incident_id), int(seq), new_since=added_since is not None, fresh=fresh
        ),
        "now",
        *(["since"] if added_since is not None else []),
    )
    params: dict[str, object] = {
        "topic": TOPIC,
        "priority": priority_for(severity),
        "payload": json.dumps(payload),
        "now": now,
    }
    if added_since is not None:
        params["since"] = utc(added_since)
    with bulk_writes(session):
        result = session.execute(statement, params)
    return max(result.rowcount or 0, 0)
