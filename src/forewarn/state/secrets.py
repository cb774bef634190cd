"""Signing secrets: generated at set-up, kept in the state store, rotated with a grace period.

Two secrets sign what leaves forewarn: ``links`` (unsubscribe links) and ``webhooks`` (the
``X-Forewarn-Signature`` of outbound webhooks). Migration 0011 generates both at random when a store is set up,
so every installation has its own. A secret set in the configuration (``FOREWARN_SECRET_KEY``,
``FOREWARN_WEBHOOK__SECRET``) takes precedence; configured to the value that once shipped in the code, it is
used as configured but ``forewarn serve`` refuses to listen on anything but loopback with it
(:func:`shipped_defaults_in_use`).

Rotation (:func:`rotate`) makes a new current secret and keeps the old one valid for verification until a grace
period ends, so the links in messages already sent keep working meanwhile.

>>> from forewarn.state.db import make_engine, transaction, upgrade
>>> import tempfile
>>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"
>>> upgrade(url)
>>> engine = make_engine(url)
>>> with transaction(engine) as s:
...     before = load(s, "links")
...     after = rotate(s, "links", timedelta(days=30), actor="cli:doc")
>>> after.previous == before.current != after.current, before.current in after.accepted()
(True, True)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from forewarn.state import audit
from forewarn.state.models import StoredSecret, utcnow

# the values that shipped in forewarn's code before secrets were generated: never trusted off loopback
SHIPPED_DEFAULTS = {"links": "forewarn-dev-secret-change-me", "webhooks": "change-me"}
NAMES = tuple(SHIPPED_DEFAULTS)


@dataclass(frozen=True)
class Keyring:
    """The current secret (signs) and the previous one (still verifies until ``previous_until``)."""

    current: str
    previous: str | None = None
    previous_until: datetime | None = None  # None with a previous secret: valid while it is configured

    def accepted(self, now: datetime | None = None) -> tuple[str, ...]:
        """The secrets a signature may be made with at ``now``, current first.

        >>> from datetime import UTC
        >>> Keyring("new", "old", datetime(2026, 1, 1, tzinfo=UTC)).accepted(datetime(2026, 2, 1, tzinfo=UTC))
        ('new',)
        """
        if self.previous is None or (
            self.previous_until is not None and (now or utcnow()) >= self.previous_until
        ):
            return (self.current,)
        return (self.current, self.previous)

    @property
    def is_shipped_default(self) -> bool:
        return self.current in SHIPPED_DEFAULTS.values()


def generate() -> str:
    """A new secret: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def load(session: Session, name: str) -> Keyring:
    """The stored keyring ``name``; one is generated when the store has none (a store set up by hand)."""
    row = session.get(StoredSecret, name)
    if row is None:
        row = StoredSecret(name=name, value=generate(), created_at=utcnow())
        session.add(row)
        session.flush()
    return Keyring(row.value, row.previous_value, row.previous_until)


def rotate(session: Session, name: str, grace: timedelta, *, actor: str, ip: str | None = None) -> Keyring:
    """Replace secret ``name`` by a new one; the old one stays accepted for ``grace``."""
    if name not in NAMES:
        raise ValueError(f"unknown secret {name!r}; expected one of {', '.join(NAMES)}")
    old = load(session, name)
    row = session.get(StoredSecret, name)
    assert row is not None
    now = utcnow()
    row.value, row.created_at = generate(), now
    row.previous_value, row.previous_until = old.current, now + grace
    audit.record(
        session, actor, "secret.rotated", f"secret:{name}", ip=ip, detail={"grace_s": grace.total_seconds()}
    )
    return Keyring(row.value, row.previous_value, row.previous_until)


def resolve(session: Session, name: str, configured: str | None, previous: str | None = None) -> Keyring:
    """The keyring in force: the configured secret when there is one (``previous`` still verifies while it is
    configured), else the stored one."""
    if configured:
        return Keyring(configured, previous)
    return load(session, name)


@dataclass(frozen=True)
class Secrets:
    """Every keyring in force, as ``Context.secrets`` gives them."""

    links: Keyring
    webhooks: Keyring

    def shipped_defaults_in_use(self) -> list[str]:
        """The names of the secrets that are still a value that shipped in the code."""
        return [name for name in NAMES if getattr(self, name).is_shipped_default]
