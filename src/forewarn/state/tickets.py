"""A ticket's lifecycle, and the one definition of an open case that live guardrails and backtests share.

A ticket opens with its inbound contact (``contact`` signal; the ticket's ``external_id`` is the contact's
``event_id``). Its status then follows ``ticket_update`` signals (a helpdesk's webhook, an export, or the API,
which records its changes as such signals too): ``open``, ``pending`` (waiting for the customer), ``solved``,
``closed``. The latest event wins, by time (at the same time a closing status wins), so re-sent and late
updates change nothing twice and the order they arrive in does not matter.

A case is **open at t** (:func:`is_open`) when its latest event up to t left it ``open`` or ``pending`` and
that event is less than the idle time (setting ``ticket_idle_close``, default 7 days) before t. The live engine
asks it of the ticket rows (:func:`open_case_topics`), the backtest of the signal history
(:class:`CaseHistory`): the same question on the same events gives the same answer.

>>> from datetime import datetime, UTC
>>> t0, idle = datetime(2026, 3, 1, 9, tzinfo=UTC), timedelta(days=7)
>>> is_open("open", t0, t0 + timedelta(days=6), idle), is_open("open", t0, t0 + timedelta(days=7), idle)
(True, False)
>>> is_open("solved", t0, t0 + timedelta(hours=1), idle), is_open("pending", t0, t0 + timedelta(hours=1), idle)
(False, True)
>>> supersedes(t0, "closed", t0, "open"), supersedes(t0, "open", t0, "closed")
(True, False)
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from forewarn.config import Settings
from forewarn.state.models import Ticket
from forewarn.timeutil import utc

if TYPE_CHECKING:
    import polars as pl

OPEN_STATUSES = ("open", "pending")
CLOSED_STATUSES = ("solved", "closed")
STATUSES = OPEN_STATUSES + CLOSED_STATUSES
# the setting's default, declared once in forewarn.config
DEFAULT_IDLE_CLOSE: timedelta = Settings.model_fields["ticket_idle_close"].default
CHUNK = 5_000


def is_open(status: str, last_activity_at: datetime, at: datetime, idle: timedelta) -> bool:
    """Whether a case whose latest event (at ``last_activity_at``) left it in ``status`` is open at ``at``."""
    return status in OPEN_STATUSES and last_activity_at <= at < last_activity_at + idle


def supersedes(ts: datetime, status: str, last_ts: datetime, last_status: str) -> bool:
    """Whether an event (``ts``, ``status``) replaces the recorded latest one: later wins; at the same time a
    closing status wins over an open one; an equal event changes nothing."""
    return (ts, status in CLOSED_STATUSES) > (last_ts, last_status in CLOSED_STATUSES)


def idle_close(settings: Any) -> timedelta:
    """The idle time after which a case closes: ``settings.ticket_idle_close`` (``Settings``), else its default."""
    return getattr(settings, "ticket_idle_close", None) or DEFAULT_IDLE_CLOSE


# -- live: the tickets table ------------------------------------------------------------------------------


def open_case_topics(
    session: Session, customer_ids: Sequence[str], at: datetime, idle: timedelta = DEFAULT_IDLE_CLOSE
) -> dict[str, set[str]]:
    """The topics of each customer's open cases at ``at`` (customers without one are left out)."""
    out: dict[str, set[str]] = defaultdict(set)
    for i in range(0, len(customer_ids), CHUNK):
        q = select(Ticket.customer_id, Ticket.topic, Ticket.status, Ticket.last_activity_at).where(
            Ticket.customer_id.in_(customer_ids[i : i + CHUNK]),
            Ticket.topic.is_not(None),
            Ticket.opened_at <= at,
            Ticket.last_activity_at > at - idle,  # only these can be open: keeps old history out of the read
        )
        for cid, topic, status, last in session.execute(q):
            if is_open(status, last, at, idle):
                out[cid].add(topic)
    return out


def transition(ticket: Ticket, status: str, at: datetime) -> bool:
    """Apply one status event to a ticket when it supersedes the recorded one; whether anything changed."""
    if status not in STATUSES:
        raise ValueError(f"ticket status {status!r} is not one of {', '.join(STATUSES)}")
    at = utc(at)
    if not supersedes(at, status, ticket.last_activity_at, ticket.status):
        return False
    ticket.status = status
    ticket.last_activity_at = at
    ticket.closed_at = at if status in CLOSED_STATUSES else None
    return True


def open_tickets(engine: Engine, contacts: Iterable[Mapping[str, Any]]) -> int:
    """Open a ``Ticket`` per inbound contact (external_id = event_id), skipping those already ticketed."""
    from forewarn.state.customers import dialect_insert

    rows = [
        {
            "external_id": r["event_id"],
            "customer_id": r["customer_id"],
            "channel": r["channel"],
            "subject": r.get("subject") or "",
            "text": r.get("text") or "",
            "topic": r.get("topic"),
            "status": "open",
            "opened_at": r["ts"],
            "last_activity_at": r["ts"],
        }
        for r in contacts
    ]
    if not rows:
        return 0
    insert = dialect_insert(engine)
    count = sa.select(sa.func.count()).select_from(Ticket.__table__)
    with engine.begin() as conn:
        before = conn.execute(count).scalar_one()
        conn.execute(insert(Ticket.__table__).on_conflict_do_nothing(index_elements=["external_id"]), rows)
        return conn.execute(count).scalar_one() - before


@dataclass
class UpdateResult:
    """What applying a batch of ticket updates did: status changes, and updates naming no known ticket."""

    changed: int = 0
    unknown: int = 0


def apply_updates(engine: Engine, updates: Iterable[Mapping[str, Any]]) -> UpdateResult:
    """Apply ``ticket_update`` rows (``ticket_id``, ``status``, ``ts``) to the tickets they name, in one
    transaction; in any order, any number of times, with the same end state."""
    by_ticket: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for r in updates:
        by_ticket[r["ticket_id"]].append((utc(r["ts"]), r["status"]))
    result = UpdateResult()
    ids = list(by_ticket)
    with Session(engine) as session, session.begin():
        for i in range(0, len(ids), CHUNK):
            found = session.scalars(select(Ticket).where(Ticket.external_id.in_(ids[i : i + CHUNK])))
            for ticket in found:
                events = by_ticket.pop(ticket.external_id)
                changed = [transition(ticket, status, ts) for ts, status in sorted(events)]
                result.changed += any(changed)
        result.unknown = sum(len(v) for v in by_ticket.values())
    return result


def close_idle_tickets(session: Session, *, now: datetime, idle: timedelta = DEFAULT_IDLE_CLOSE) -> int:
    """Record as ``closed`` the open tickets idle for ``idle`` at ``now`` (closed at the time they went idle).

    The live loop runs it so the rows say what :func:`is_open` already decides; returns how many it closed.
    """
    now = utc(now)
    q = (
        select(Ticket.id, Ticket.last_activity_at)
        .where(Ticket.status.in_(OPEN_STATUSES), Ticket.last_activity_at <= now - idle)
        .limit(CHUNK)
    )
    n = 0
    # in chunks by primary key: the first pass on a store with years of never-closed tickets closes them all
    while rows := session.execute(q).all():
        session.execute(
            sa.update(Ticket), [{"id": i, "status": "closed", "closed_at": last + idle} for i, last in rows]
        )
        n += len(rows)
    return n


# -- backtests: the signal history ------------------------------------------------------------------------


@dataclass
class _Case:
    topic: str
    opened_at: datetime
    keys: list[tuple[datetime, bool]]  # (ts, closing), sorted: the order ``supersedes`` ranks events in
    statuses: list[str]


class CaseHistory:
    """Every case's events from the contact and ``ticket_update`` frames, asked point in time.

    >>> import polars as pl
    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 3, 1, tzinfo=UTC)
    >>> contacts = pl.DataFrame({"event_id": ["k1"], "customer_id": ["c1"], "ts": [t], "topic": ["usage"]})
    >>> updates = pl.DataFrame({"ticket_id": ["k1"], "ts": [t + timedelta(days=1)], "status": ["solved"]})
    >>> h = CaseHistory.from_frames(contacts, updates)
    >>> idle = DEFAULT_IDLE_CLOSE
    >>> h.open_topics("c1", t + timedelta(hours=1), idle), h.open_topics("c1", t + timedelta(days=2), idle)
    (frozenset({'usage'}), frozenset())
    """

    def __init__(self, cases: Mapping[str, list[_Case]]) -> None:
        self._cases = cases

    @classmethod
    def from_frames(cls, contacts: pl.DataFrame, updates: pl.DataFrame | None = None) -> CaseHistory:
        """``contacts``: ``event_id, customer_id, ts, topic`` (rows without a topic are no case on a topic);
        ``updates``: ``ticket_id, ts, status``."""
        events: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        if updates is not None and updates.height:
            for ticket_id, ts, status in updates.select("ticket_id", "ts", "status").iter_rows():
                events[ticket_id].append((ts, status))
        cases: dict[str, list[_Case]] = defaultdict(list)
        for event_id, cid, ts, topic in contacts.select("event_id", "customer_id", "ts", "topic").iter_rows():
            if topic is None:
                continue
            ranked = sorted(
                [(ts, False, "open")] + [(t, s in CLOSED_STATUSES, s) for t, s in events.get(event_id, ())],
                key=lambda e: (e[0], e[1]),
            )
            cases[cid].append(_Case(topic, ts, [(t, c) for t, c, _ in ranked], [s for _, _, s in ranked]))
        return cls(cases)

    def open_topics(self, customer_id: str, at: datetime, idle: timedelta) -> frozenset[str]:
        """The topics of the customer's cases open at ``at``, from the events up to ``at`` only."""
        out = set()
        for case in self._cases.get(customer_id, ()):
            if case.opened_at > at:
                continue
            # the latest event up to ``at``: the last key not after (at, closing)
            i = bisect.bisect_right(case.keys, (at, True)) - 1
            if is_open(case.statuses[i], case.keys[i][0], at, idle):
                out.add(case.topic)
        return frozenset(out)


__all__ = [
    "CLOSED_STATUSES",
    "DEFAULT_IDLE_CLOSE",
    "OPEN_STATUSES",
    "STATUSES",
    "CaseHistory",
    "UpdateResult",
    "apply_updates",
    "close_idle_tickets",
    "idle_close",
    "is_open",
    "open_case_topics",
    "open_tickets",
    "supersedes",
    "transition",
]
