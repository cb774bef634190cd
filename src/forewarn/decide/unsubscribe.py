"""Signed unsubscribe links: one link per (customer, channel, topic), recorded in ``Consent`` at once.

The token is ``base64url(json [customer, channel, topic]) . base64url(hmac_sha256(secret, payload)[:16])``: no
state to look up, nothing to guess, and tampering with any part breaks the signature. Links do not expire (an
unsubscribe link in a years-old email must still work).

>>> token = sign("s3cret", "c1", "email", "billing")
>>> verify("s3cret", token)
Unsubscribe(customer_id='c1', channel='email', topic='billing')
>>> try:
...     verify("other-secret", token)
... except BadToken as e:
...     print(e)
the link's signature does not match (was it changed or cut short?)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from forewarn.state.models import Consent, Customer, utcnow

SOURCE = "unsubscribe-link"


class BadToken(ValueError):
    """The unsubscribe token is malformed or its signature does not match."""


@dataclass(frozen=True)
class Unsubscribe:
    customer_id: str
    channel: str
    topic: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:16])


def sign(secret: str, customer_id: str, channel: str, topic: str) -> str:
    """A URL-safe token for unsubscribing ``customer_id`` from ``topic`` on ``channel``."""
    payload = _b64(json.dumps([customer_id, channel, topic], separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: str | Sequence[str], token: str) -> Unsubscribe:
    """What ``token`` unsubscribes; raises ``BadToken`` when it was not signed with ``secret`` (or with one of
    several: the current secret and, during a rotation's grace period, the previous one)."""
    payload, dot, mac = token.partition(".")
    if not dot or not payload or not mac:
        raise BadToken("the link is incomplete (expected <payload>.<signature>)")
    accepted = (secret,) if isinstance(secret, str) else tuple(secret)
    if not any(hmac.compare_digest(mac, _mac(k, payload)) for k in accepted):
        raise BadToken("the link's signature does not match (was it changed or cut short?)")
    try:
        customer_id, channel, topic = json.loads(_unb64(payload))
    except (ValueError, TypeError) as e:
        raise BadToken(f"the link's content is unreadable ({e})") from None
    return Unsubscribe(str(customer_id), str(channel), str(topic))


def unsubscribe_url(public_url: str, secret: str, customer_id: str, channel: str, topic: str) -> str:
    """The public link for a message (``public_url`` + ``/u/<token>``), signed with ``secret`` (the current
    ``links`` secret: ``ctx.secrets.links.current``).

    >>> unsubscribe_url("http://127.0.0.1:8000", "s3cret", "c1", "sms", "usage").startswith("http://127.0.0.1:8000/u/")
    True
    """
    token = sign(secret, customer_id, channel, topic)
    return f"{public_url.rstrip('/')}/u/{token}"


def record(session: Session, unsub: Unsubscribe, *, everything: bool = False) -> bool:
    """Record the unsubscribe in ``Consent`` (``granted = False``, source ``unsubscribe-link``).

    ``everything`` stops every topic on that channel (topic ``*`` and every topic row). Returns ``False`` when
    the customer is unknown. Idempotent: unsubscribing twice leaves one row.
    """
    if session.get(Customer, unsub.customer_id) is None:
        return False
    topic = "*" if everything else unsub.topic
    row = session.get(Consent, (unsub.customer_id, unsub.channel, topic))
    if row is None:
        session.add(
            Consent(
                customer_id=unsub.customer_id,
                channel=unsub.channel,
                topic=topic,
                granted=False,
                source=SOURCE,
            )
        )
    else:
        row.granted, row.source, row.updated_at = False, SOURCE, utcnow()
    if everything:
        session.execute(
            update(Consent)
            .where(Consent.customer_id == unsub.customer_id, Consent.channel == unsub.channel)
            .values(granted=False, source=SOURCE, updated_at=utcnow())
        )
    session.flush()
    return True
