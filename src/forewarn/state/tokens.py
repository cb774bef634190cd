"""API tokens: created, listed and revoked here (the one writer of ``api_tokens``); checked by ``forewarn.api.auth``.

A token looks like ``fw_<43 url-safe characters>``: the prefix tells a leaked token apart in logs and secret
scanners (as Stripe's ``sk_live_`` and GitHub's ``ghp_`` do), the rest is 32 random bytes. Only its SHA-256 is
stored; the token itself is shown once, when created. A plain, unsalted hash is enough here, unlike passwords:
256 random bits cannot be guessed or looked up in a table, so a slow salted hash (bcrypt, argon2) would add
nothing but tens of milliseconds to every request, and an unsalted hash lets the store find the token by an
index on the hash.

>>> from forewarn.state.db import make_engine, transaction, upgrade
>>> import tempfile
>>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"
>>> upgrade(url)
>>> engine = make_engine(url)
>>> with transaction(engine) as s:
...     row, secret = create(s, "ingest job", ["signals:write"], actor="cli:doc")
>>> secret.startswith("fw_") and len(secret) == 46
True
>>> with transaction(engine) as s:
...     find(s, secret).scopes, find(s, secret + "x")
(['signals:write'], None)
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from forewarn.state import audit
from forewarn.state.models import ApiToken, utcnow

PREFIX = "fw_"

# Every scope a route can require, and what it allows. ``admin`` allows everything.
SCOPES: dict[str, str] = {
    "signals:write": "ingest signal events (POST /v1/signals)",
    "customers:read": "read a customer's timeline (personal data)",
    "customers:write": "upsert customers, services and dependencies",
    "incidents:read": "list and read incidents and their metrics",
    "incidents:write": "open, update, widen and resolve incidents",
    "alerts:write": "Prometheus Alertmanager's webhook (opens and resolves incidents from alerts)",
    "metrics:read": "the Prometheus /metrics and the dashboards' JSON under /v1/metrics",
    "tickets:read": "read a ticket and whether its case is open",
    "tickets:write": "close, reopen or change a ticket's status",
    "playbooks:approve": "approve or reject playbooks and their decisions",
    "audit:read": "read the audit log",
    "admin": "everything above",
}


class TokenError(ValueError):
    """A token request that cannot be done (unknown scope, unknown token)."""


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256.

    >>> hash_token("fw_x")[:12]
    '8594db221016'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def allows(scopes: Iterable[str], needed: str) -> bool:
    """Whether a token with ``scopes`` may do what needs ``needed``.

    >>> allows(["incidents:read"], "incidents:write"), allows(["admin"], "incidents:write")
    (False, True)
    """
    granted = set(scopes)
    return needed in granted or "admin" in granted


def create(
    session: Session,
    name: str,
    scopes: Iterable[str],
    *,
    actor: str,
    expires_in: timedelta | None = None,
    rate_limit: float | None = None,
    ip: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token with ``scopes``; returns its row and the token itself (which is not kept anywhere)."""
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        problem = f"unknown scope(s): {', '.join(unknown)}" if unknown else "a token needs at least one scope"
        raise TokenError(f"{problem}; expected some of {', '.join(SCOPES)}")
    if rate_limit is not None and rate_limit < 0:
        raise TokenError(f"rate limit must be >= 0 requests per second (0: unlimited), got {rate_limit}")
    token = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        name=name[:200],
        prefix=token[:10],
        token_hash=hash_token(token),
        scopes=wanted,
        rate_limit=rate_limit,
        created_by=actor[:200],
        created_at=now,
        expires_at=now + expires_in if expires_in else None,
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor, "token.created", f"token:{row.id}", ip=ip, detail={"name": row.name, "scopes": wanted}
    )
    return row, token


def revoke(session: Session, token_id: int, *, actor: str, ip: str | None = None) -> ApiToken:
    """Revoke a token at once (revoking twice keeps the first time)."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenError(f"no token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, actor, "token.revoked", f"token:{row.id}", ip=ip, detail={"name": row.name})
    return row


def all_tokens(session: Session, *, include_revoked: bool = False) -> list[ApiToken]:
    q = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        q = q.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(q))


def find(session: Session, token: str, now: datetime | None = None) -> ApiToken | None:
    """The live token (not revoked, not expired) whose secret is ``token``; ``None`` otherwise."""
    if not token.startswith(PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return None
    return row


def mark_used(session: Session, token_id: int, at: datetime) -> None:
    """Set a token's last-used time (callers throttle this: it is not written on every request)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=at))
