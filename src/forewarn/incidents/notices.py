"""The notice series: one thread per customer per incident, fanned out to the outbox as a set query.

Each public step of an incident (the opening notice, every public update, the all-clear) becomes one outbox
row per affected customer, inserted by a single ``INSERT .. SELECT``. The row names its template in
``payload.template``; rendering happens at delivery, so fan-out to a million customers writes only small rows.

- channel: the first of ``customers.channels`` that consent allows for the topic (the one rule of
  :mod:`forewarn.deliver.consent`: the topic's own row wins over the ``*`` row; no row means allowed, outage
  not being an opt-in topic) and for which the customer has an address (the column its declaration names:
  email -> ``email``, sms -> ``phone``; other channels need none). The worker checks consent again at send time.
- the rows are written by the outbox's own statement builder (:func:`forewarn.deliver.outbox.insert_select`).
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
from collections.abc import Collection
from datetime import datetime

from sqlalchemy.orm import Session

from forewarn.deliver import consent
from forewarn.deliver.channels.base import channel_specs
from forewarn.deliver.outbox import has_key_prefix, insert_select
from forewarn.incidents._db import bulk_writes, dialect, sql
from forewarn.timeutil import utc

TOPIC = "outage"
TEMPLATE_OPEN = "incident_open"
TEMPLATE_UPDATE = "incident_update"
TEMPLATE_RESOLVED = "incident_resolved"
TEMPLATE_REPLY = "incident_reply"


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


def _address_fields() -> dict[str, str]:
    """Declared channel -> the customer column holding its address (channels not listed need none)."""
    return {name: spec.address_field for name, spec in channel_specs().items() if spec.address_field}


def _address_case(channel_expr: str, customer: str) -> str:
    whens = " ".join(f"WHEN '{ch}' THEN {customer}.{col}" for ch, col in _address_fields().items())
    return f"CASE {channel_expr} {whens} ELSE NULL END"


def _has_address(channel_expr: str, customer: str) -> str:
    """True when the channel needs no address or the customer has one for it (a null channel has none).
    A simple CASE reads the channel once (on PostgreSQL each read of ``channels ->> 0`` parses the JSON)."""
    whens = " ".join(
        f"WHEN '{ch}' THEN COALESCE({customer}.{col}, '') <> ''" for ch, col in _address_fields().items()
    )
    return f"(CASE {channel_expr} {whens} ELSE {channel_expr} IS NOT NULL END)"


def _fan_out_sql(
    db: str, incident_id: int, seq: int, *, new_since: bool, fresh: bool, explicit: Collection[str]
) -> str:
    """The INSERT .. SELECT for one step, written for SQLite's or PostgreSQL's JSON functions. The outbox
    builds the statement (:func:`forewarn.deliver.outbox.insert_select`), consent is its one rule
    (:mod:`forewarn.deliver.consent`) and the address columns come from the channels' declarations.

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
        fence = "OFFSET 0"
    else:
        elements = "json_each(q.channels) AS j"
        elements_p = "json_each(p.channels) AS j"
        order = "j.key"
        payload = ":payload"
        fence = "LIMIT -1 OFFSET 0"
    no_row = consent.sql_default(TOPIC, explicit, db)

    walk = (
        f"(SELECT j.value FROM {elements} WHERE {consent.sql_allows('q.customer_id', 'j.value', no_row)} "
        f"AND {_has_address('j.value', 'q')} ORDER BY {order} LIMIT 1)"
    )
    first_ok = (
        f"q.first_channel IS NOT NULL AND {_has_address('q.first_channel', 'q')} "
        f"AND {consent.sql_joined('kt', 'ks', no_row)}"
    )
    any_consent = (
        f"EXISTS (SELECT 1 FROM {elements_p} WHERE {consent.sql_allows('p.customer_id', 'j.value', no_row)})"
    )
    chosen = "COALESCE(p.channel, p.first_channel, 'none')"
    added = "AND a.added_at >= :since" if new_since else ""
    columns = {
        "idempotency_key": f"'incident:{incident_id}:u{seq}:' || p.customer_id || ':' || {chosen}",
        "customer_id": "p.customer_id",
        "channel": chosen,
        "address": _address_case("p.channel", "p"),
        "topic": ":topic",
        "thread_key": f"'incident:{incident_id}:' || p.customer_id",
        "priority": ":priority",
        "subject": "''",
        "body": "''",
        "payload": payload,
        "status": "CASE WHEN p.channel IS NULL THEN 'suppressed' ELSE 'pending' END",
        "reason": f"""CASE WHEN p.channel IS NOT NULL THEN NULL
            WHEN p.first_channel IS NULL THEN 'no contact channel on file'
            WHEN {any_consent} THEN 'no address on file for any channel with consent'
            ELSE 'consent withheld for topic ' || :topic || ' on every preferred channel' END""",
        "attempts": "0",
        "next_attempt_at": ":now",
        "incident_id": str(int(incident_id)),
        "created_at": ":now",
    }
    # The OFFSETs fence the subqueries: the first channel (a JSON read) and the channel pick are computed once
    # per row, not once per use (the planner would otherwise inline them into every expression that uses
    # them), and the rows stream through (nothing is materialised).
    source = f"""
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
"""
    return insert_select(columns, source, conflict_check=not fresh)


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
    explicit: Collection[str] = consent.EXPLICIT_TOPICS,
) -> int:
    """Queue step ``seq`` of incident ``incident_id`` for its affected customers; return rows inserted.

    ``added_since`` limits it to customers affected since then (the catch-up after widening). Rows that
    already exist (same idempotency key) are left alone, so calling this twice queues nothing the second time.
    ``explicit``: the topics that need an opt-in (the consent rule's default unless the settings say otherwise).
    """
    now = utc(now)
    payload = {"template": template, "incident_id": incident_id, "seq": seq, **(extra or {})}
    # a step's first fan-out inserts plainly; only a repeat (or a catch-up into a step others already got)
    # pays for the conflict check on every row
    fresh = not has_key_prefix(session, f"incident:{int(incident_id)}:u{int(seq)}:")
    statement = sql(
        _fan_out_sql(
            dialect(session),
            int(incident_id),
            int(seq),
            new_since=added_since is not None,
            fresh=fresh,
            explicit=explicit,
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
