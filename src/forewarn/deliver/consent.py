"""Consent: may a message on this topic go to this customer over this channel? One rule, used everywhere.

The guardrails (when deciding), the delivery worker (again at send time), the auto-replies to inbound contacts
and the incident notices (inside their set query, :func:`sql_allows`) all ask this module, with the same
defaults:

1. the customer's row for the channel and the topic decides;
2. else their row for the channel and topic ``*`` (every topic without its own row);
3. else nothing was said: allowed, unless the topic needs an explicit opt-in (``EXPLICIT_TOPICS`` by default,
   ``delivery.explicit_consent_topics`` in the settings).

Channels that do not message a person (``needs_consent=False`` in their declaration) are not asked about.

>>> rules = {("email", "*"): False, ("email", "outage"): True, ("sms", "marketing"): False}
>>> allows(rules, "email", "outage"), allows(rules, "email", "billing")
(True, False)
>>> allows(rules, "sms", "outage"), allows(rules, "sms", "marketing"), allows({}, "sms", "offer")
(True, False, False)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from forewarn.config import EXPLICIT_CONSENT_TOPICS as EXPLICIT_TOPICS
from forewarn.state.models import Consent

Rules = Mapping[tuple[str, str], bool]


def allows(rules: Rules, channel: str, topic: str, explicit: Collection[str] = EXPLICIT_TOPICS) -> bool:
    """Whether a customer's consent rows ``{(channel, topic): granted}`` allow ``topic`` on ``channel``."""
    specific = rules.get((channel, topic))
    if specific is not None:
        return specific
    blanket = rules.get((channel, "*"))
    if blanket is not None:
        return blanket
    return topic not in explicit


def explicit_topics(settings: Any) -> tuple[str, ...]:
    """The topics that need an explicit opt-in, from the settings (or their ``delivery`` part)."""
    delivery = getattr(settings, "delivery", settings)
    return tuple(getattr(delivery, "explicit_consent_topics", EXPLICIT_TOPICS))


def load_rules(
    db: Any, customer_ids: Iterable[str], chunk: int = 900
) -> dict[str, dict[tuple[str, str], bool]]:
    """The consent rows of ``customer_ids`` as ``{customer: {(channel, topic): granted}}`` (a session or a
    connection; plain rows, no ORM objects)."""
    ids: Sequence[str] = list(dict.fromkeys(customer_ids))
    rules: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
    cols = (Consent.customer_id, Consent.channel, Consent.topic, Consent.granted)
    for i in range(0, len(ids), chunk):
        for cid, channel, topic, granted in db.execute(
            select(*cols).where(Consent.customer_id.in_(ids[i : i + chunk]))
        ):
            rules[cid][(channel, topic)] = bool(granted)
    return rules


def sql_default(topic: str, explicit: Collection[str], dialect: str) -> str:
    """Rule 3 as an SQL literal for ``topic``: what no row means."""
    allowed = topic not in explicit
    if dialect == "postgresql":
        return "true" if allowed else "false"
    return "1" if allowed else "0"


def sql_allows(customer: str, channel: str, default: str) -> str:
    """Rules 1-3 as an SQL expression for one customer and channel (SQL expressions) and the topic bound as
    ``:topic``: two primary-key probes, the topic's row first (``granted`` is NOT NULL, so COALESCE falls
    through only when a row is missing), then ``default`` (:func:`sql_default`)."""
    probe = f"(SELECT k.granted FROM consents k WHERE k.customer_id = {customer} AND k.channel = {channel} "
    return f"COALESCE({probe}AND k.topic = :topic), {probe}AND k.topic = '*'), {default})"


def sql_joined(topic_row: str, star_row: str, default: str) -> str:
    """Rules 1-3 when the customer's topic row and ``*`` row for the channel are already joined in (as
    ``topic_row.granted`` / ``star_row.granted``; missing rows come in as NULL)."""
    return f"COALESCE({topic_row}.granted, {star_row}.granted, {default})"
