"""The audit log: who changed what, when, and from where. The one writer of ``audit_log`` is :func:`record`.

Every change a person or a token makes is recorded by calling :func:`record` in the same transaction as the
change, so a change and its entry are stored together or not at all. The table is append-only: triggers on
SQLite and PostgreSQL refuse ``UPDATE`` and ``DELETE``.

Conventions (free text, but keep to them so the log can be filtered):

- ``actor``: ``token:<id>`` for an API token, ``user:<name>`` for a dashboard user, ``cli:<os user>`` for the
  command line (:func:`cli_actor`), ``system`` for forewarn itself.
- ``action``: ``<thing>.<past tense>``, e.g. ``incident.opened``, ``incident.resolved``, ``playbook.approved``,
  ``outbox.retried``, ``token.created``, ``secret.rotated``.
- ``target``: ``<thing>:<id>``, e.g. ``incident:42``; never an email address, phone number or message body.
- ``ip``: the client's address (``request.client.host``); ``None`` for the command line.

>>> from forewarn.state.db import make_engine, transaction, upgrade
>>> import tempfile
>>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"
>>> upgrade(url)
>>> engine = make_engine(url)
>>> with transaction(engine) as s:
...     _ = record(s, "user:alice", "incident.resolved", "incident:7", ip="10.0.0.5")
>>> with transaction(engine) as s:
...     [(e.actor, e.action, e.target, e.ip) for e in entries(s)]
[('user:alice', 'incident.resolved', 'incident:7', '10.0.0.5')]
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from forewarn.state.models import AuditEntry, utcnow


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    *,
    ip: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry (in ``session``'s transaction: it commits with the change it records).

    ``detail`` holds small JSON facts about the change (counts, the new status); no personal data.
    """
    entry = AuditEntry(
        at=utcnow(),
        actor=actor[:200],
        action=action[:64],
        target=None if target is None else target[:255],
        ip=None if ip is None else ip[:64],
        detail=dict(detail) if detail else None,
    )
    session.add(entry)
    session.flush()
    return entry


def entries(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries newest first, filtered; page with ``before_id`` (the last id of the previous page)."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if actor is not None:
        q = q.where(AuditEntry.actor == actor)
    if action is not None:
        q = q.where(AuditEntry.action == action)
    if target is not None:
        q = q.where(AuditEntry.target == target)
    if since is not None:
        q = q.where(AuditEntry.at >= since)
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    return list(session.scalars(q))


def cli_actor() -> str:
    """The actor for a command typed at the command line: ``cli:<the operating-system user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli:unknown"
