"""The transactional outbox: producers enqueue in their own transaction; workers claim, send, complete.

Life of a message (``outbox.status``)::

    pending ──claim──> sending ──sent──> sent
       ^                  │ ├─ retryable failure ──> failed ──(backoff due)──> claimed again
       │                  │ ├─ permanent failure, or attempts used up ──> dead   (last_error kept)
       │                  │ └─ no consent / no address ──> suppressed            (reason kept)
       └── quiet hours / rate limit: back to pending with next_attempt_at = when it may go (reason kept)

A claim sets ``status='sending'`` and ``next_attempt_at`` = lease expiry and counts an attempt. A worker that
dies holding a claim leaves rows whose lease runs out; any worker then claims them again (at-least-once
delivery; receivers drop the duplicates by ``idempotency_key``). Claims are one ``UPDATE .. WHERE id IN
(SELECT .. LIMIT n) RETURNING ..`` statement: on PostgreSQL the sub-select takes ``FOR UPDATE SKIP LOCKED`` so
workers share the outbox without waiting for or double-claiming each other's rows; on SQLite the statement
runs under SQLite's single-writer lock, which makes it atomic across processes.

Every row of the table is written here: :func:`enqueue` for messages built one by one (playbook decisions,
auto-replies, digests) and :func:`insert_select` for set-based producers (incident notices), with one list of
required fields and one set of defaults.

Per-thread order: a message is not claimed while an earlier message (lower id) of the same customer and
``thread_key`` is still pending, failed or sending, so a customer's notice series arrives in order even across
retries. (A thread is one customer's: one customer per incident or condition.)
Priority: a claim takes due ``critical`` messages first, then ``high``, ``normal`` and ``low`` (each in due
order), so a backlog of playbook notices never delays an outage notice.

>>> from forewarn.state.db import upgrade, open_store, transaction
>>> import tempfile
>>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"; upgrade(url); engine = open_store(url)
>>> with transaction(engine) as s:
...     _ = s.execute(Customer.__table__.insert(), [{"id": "c1", "channels": [], "attributes": {}}])
...     enqueue(s, [dict(idempotency_key="k1", customer_id="c1", channel="console", topic="outage",
...                      thread_key="inc1:c1", subject="Hi", body="Outage")])
1
>>> with transaction(engine) as s:   # a replay is a no-op
...     enqueue(s, [dict(idempotency_key="k1", customer_id="c1", channel="console", topic="outage",
...                      thread_key="inc1:c1", subject="Hi", body="Outage")])
0
>>> with engine.begin() as conn:
...     [(r.idempotency_key, r.status, r.attempts) for r in claim(conn, "w1", limit=10)]
[('k1', 'sending', 1)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, select, text, update
from sqlalchemy.orm import Session

from forewarn.state.models import Customer, OutboxMessage
from forewarn.timeutil import utc

TABLE = OutboxMessage.__table__
PRIORITIES = ("critical", "high", "normal", "low")
# statuses a worker may claim, in the order it looks: expired leases first (they are the oldest work)
CLAIMABLE = ("sending", "failed", "pending")
# statuses that hold back later messages of the same thread
IN_FLIGHT = ("pending", "sending", "failed")
_REQUIRED = ("idempotency_key", "customer_id", "channel", "topic", "thread_key")
_COLUMNS = [c.name for c in TABLE.columns if c.name != "id"]
# what a claim hands the worker; the timestamps are left out (parsing them is a third of a claim's cost)
_RETURNED = [c for c in TABLE.columns if c.name not in ("created_at", "sent_at", "next_attempt_at")]

__all__ = ["Customer", "enqueue", "claim", "Outcomes", "apply_outcomes", "counts_by_status", "TABLE"]


def _row(i: int, m: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    for key in _REQUIRED:
        if not m.get(key):
            raise ValueError(
                f"outbox message #{i}: field {key!r} is required (a non-empty string), got {m.get(key)!r}"
            )
    unknown = set(m) - set(_COLUMNS)
    if unknown:
        raise ValueError(
            f"outbox message #{i}: unknown field(s) {sorted(unknown)}; expected some of {_COLUMNS}"
        )
    priority = m.get("priority") or "normal"
    if priority not in PRIORITIES:
        raise ValueError(
            f"outbox message #{i}: field 'priority' must be one of {PRIORITIES}, got {priority!r}"
        )
    payload = m.get("payload") or {}
    if not m.get("body") and not payload.get("template"):
        raise ValueError(f"outbox message #{i}: give either 'body' or payload={{'template': '<name>', ...}}")
    next_at = m.get("next_attempt_at") or now
    return {
        "idempotency_key": m["idempotency_key"],
        "customer_id": m["customer_id"],
        "channel": m["channel"],
        "address": m.get("address"),
        "topic": m["topic"],
        "thread_key": m["thread_key"],
        "priority": priority,
        "subject": m.get("subject") or "",
        "body": m.get("body") or "",
        "payload": payload,
        "status": m.get("status") or "pending",
        "reason": m.get("reason"),
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": next_at.astimezone(UTC),
        "incident_id": m.get("incident_id"),
        "finding_id": m.get("finding_id"),
        "ticket_id": m.get("ticket_id"),
        "playbook": m.get("playbook"),
        "created_at": (m.get("created_at") or now).astimezone(UTC),
        "sent_at": None,
    }


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported stores
        raise NotImplementedError(f"outbox enqueue supports sqlite and postgresql, not {dialect}")
    return insert(TABLE).on_conflict_do_nothing(index_elements=["idempotency_key"])


# what a column holds when the producer leaves it out, as SQL for set-based producers (insert_select); the
# Python path (_row) fills the same values
_SQL_DEFAULTS = {
    "priority": "'normal'",
    "subject": "''",
    "body": "''",
    "status": "'pending'",
    "attempts": "0",
    "next_attempt_at": ":now",
    "created_at": ":now",
}


def insert_select(columns: Mapping[str, str], source: str, *, conflict_check: bool = True) -> str:
    """The outbox's INSERT .. SELECT for a set-based producer (an incident's notices to a million customers):
    the same table, the same required fields and defaults as :func:`enqueue`, one statement.

    ``columns`` maps outbox columns to SQL expressions over ``source`` (the ``FROM ..`` part, ending with its
    ``WHERE``); a column left out gets :func:`enqueue`'s default (``:now`` for the times: bind it). With
    ``conflict_check`` a row whose ``idempotency_key`` exists is skipped, as in :func:`enqueue`; without it
    (the producer knows none of its keys exists yet) the insert skips the per-row check.

    >>> print(insert_select({"idempotency_key": "'k'", "customer_id": "c.id", "channel": "'email'",
    ...                      "topic": "'outage'", "thread_key": "'t'", "payload": "'{}'"},
    ...                     "FROM customers c WHERE true"))  # doctest: +NORMALIZE_WHITESPACE
    INSERT INTO outbox (idempotency_key, customer_id, channel, topic, thread_key, payload, priority, subject,
        body, status, attempts, next_attempt_at, created_at)
    SELECT 'k', c.id, 'email', 'outage', 't', '{}', 'normal', '', '', 'pending', 0, :now, :now
    FROM customers c WHERE true
    ON CONFLICT (idempotency_key) DO NOTHING
    """
    missing = [key for key in (*_REQUIRED, "payload") if key not in columns]
    unknown = set(columns) - set(_COLUMNS)
    if missing or unknown:
        raise ValueError(
            f"outbox insert_select: missing {missing}, unknown {sorted(unknown)}; expected some of {_COLUMNS}"
        )
    exprs = {**columns, **{k: v for k, v in _SQL_DEFAULTS.items() if k not in columns}}
    conflict = "\nON CONFLICT (idempotency_key) DO NOTHING" if conflict_check else ""
    return f"INSERT INTO outbox ({', '.join(exprs)})\nSELECT {', '.join(exprs.values())}\n{source.strip()}{conflict}"


def has_key_prefix(session: Session | Connection, prefix: str) -> bool:
    """Whether any message's idempotency key starts with ``prefix``: one range probe on the key's unique
    index (keys compare byte by byte on both stores, so the prefix's keys are exactly those between the two
    bounds; ``prefix`` ends with a separator below ``;``, such as ``:``)."""
    probe = text("SELECT 1 FROM outbox WHERE idempotency_key >= :lo AND idempotency_key < :hi LIMIT 1")
    return (
        session.execute(probe, {"lo": prefix, "hi": prefix[:-1] + chr(ord(prefix[-1]) + 1)}).first()
        is not None
    )


def enqueue(
    session: Session | Connection, messages: Sequence[Mapping[str, Any]], now: datetime | None = None
) -> int:
    """Insert messages (``status='pending'``) in the caller's transaction; returns how many were new.

    Replays are no-ops: a message whose ``idempotency_key`` exists is skipped (``ON CONFLICT DO NOTHING``).
    Each message needs ``idempotency_key, customer_id, channel, topic, thread_key`` and either ``subject`` /
    ``body`` or ``payload={"template": name, ...}``; ``address`` may be left out (resolved at send time).
    Bad input raises ``ValueError`` naming the message's position and field.
    """
    if not messages:
        return 0
    t = utc(now)
    rows = [_row(i, m, t) for i, m in enumerate(messages)]
    dialect = session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
    inserted = 0
    for start in range(0, len(rows), 5000):
        result = session.execute(_insert(dialect).returning(TABLE.c.id), rows[start : start + 5000])
        inserted += len(result.all())
    return inserted


@lru_cache(maxsize=128)
def _claim_stmt(dialect: str, status: str, priority: str | None, channels: tuple[str, ...] | None) -> Any:
    """The claim statement, built once per (dialect, status, priority, channels); values are bound per call
    (``now``, ``lease``, ``lim``, ``claimed_by``). Building it afresh cost ~50 us per claimed message."""
    now = bindparam("now", type_=TABLE.c.next_attempt_at.type)
    cand = TABLE.alias("cand")
    earlier = TABLE.alias("earlier")
    # a thread is one customer's (its key names the customer), so the customer's in-flight rows are the only
    # candidates: one probe of ix_outbox_customer_status_sent (customer, status), no index on the long key
    held_back = (
        select(earlier.c.id)
        .where(
            earlier.c.customer_id == cand.c.customer_id,
            earlier.c.status.in_(IN_FLIGHT),
            earlier.c.thread_key == cand.c.thread_key,
            # ``id + 0`` keeps the planner off the primary key range: on a freshly filled, not yet analysed
            # outbox PostgreSQL may otherwise read ~100k index entries per candidate row (seconds per claim)
            earlier.c.id + 0 < cand.c.id,
        )
        .exists()
    )
    sub = select(cand.c.id).where(cand.c.status == status, cand.c.next_attempt_at <= now, ~held_back)
    if priority is not None:
        sub = sub.where(cand.c.priority == priority)
    if channels is not None:
        sub = sub.where(cand.c.channel.in_(list(channels)))
    sub = sub.order_by(cand.c.next_attempt_at).limit(bindparam("lim", type_=Integer()))
    if dialect == "postgresql":
        # a materialised CTE, not ``id IN (sub-select)``: PostgreSQL may re-run an IN sub-select per outer
        # row, and with SKIP LOCKED each re-run finds new rows, so the LIMIT would not hold
        due = sub.with_for_update(skip_locked=True, of=cand).cte("due").prefix_with("MATERIALIZED")
        # (rows are locked, so no status re-check; joining on id alone keeps the plan a primary-key lookup
        # even when the statistics of a just-filled outbox are stale)
        where = [TABLE.c.id == due.c.id]
    else:
        where = [TABLE.c.id.in_(sub.scalar_subquery()), TABLE.c.status == status]
    return (
        update(TABLE)
        .where(*where)
        .values(
            status="sending",
            next_attempt_at=bindparam("lease", type_=TABLE.c.next_attempt_at.type),
            attempts=TABLE.c.attempts + 1,
            reason=bindparam("claimed_by", type_=TABLE.c.reason.type),
        )
        .returning(*_RETURNED)
    )


def claim(
    conn: Connection,
    worker_id: str,
    limit: int = 200,
    lease_s: float = 300.0,
    now: datetime | None = None,
    channels: Sequence[str] | None = None,
) -> list[Any]:
    """Claim up to ``limit`` due messages for ``worker_id`` in the caller's transaction; returns their rows.

    Rows come back with ``status='sending'`` and ``attempts`` already counting this attempt (their
    ``next_attempt_at`` in the table is the lease expiry; the row returned leaves the timestamps out).
    ``channels`` restricts the claim to those channels.
    Commit promptly: on SQLite the claim holds the write lock until then.
    """
    t = utc(now)
    lease_until = t + timedelta(seconds=lease_s)
    dialect = conn.dialect.name
    claimed_by = f"claimed by {worker_id}"[:256]
    rows: list[Any] = []
    only = None if channels is None else tuple(channels)
    for status in CLAIMABLE:
        # expired leases are few and already late: by due time alone; the rest by priority, then due time
        for priority in (None,) if status == "sending" else PRIORITIES:
            if len(rows) >= limit:
                break
            stmt = _claim_stmt(dialect, status, priority, only)
            params = {"now": t, "lease": lease_until, "lim": limit - len(rows), "claimed_by": claimed_by}
            rows.extend(conn.execute(stmt, params).all())
    rows.sort(key=lambda r: r.id)
    return rows


@dataclass
class Outcomes:
    """What happened to a batch, applied in one transaction by :func:`apply_outcomes`."""

    sent: list[int] = field(default_factory=list)
    # (id, next_attempt_at, last_error)
    failed: list[tuple[int, datetime, str]] = field(default_factory=list)
    # (id, last_error)
    dead: list[tuple[int, str]] = field(default_factory=list)
    # (id, reason)
    suppressed: list[tuple[int, str]] = field(default_factory=list)
    # (id, next_attempt_at, reason): back to pending without using up an attempt
    deferred: list[tuple[int, datetime, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent) + len(self.failed) + len(self.dead) + len(self.suppressed) + len(self.deferred)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("sent", "failed", "dead", "suppressed", "deferred")}


def _chunks(ids: Sequence[int], size: int = 900) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def apply_outcomes(conn: Connection, outcomes: Outcomes, now: datetime | None = None) -> None:
    """Record a batch's outcomes with a handful of set-based statements (not one round trip per message).

    Only rows still ``sending`` are changed, so a worker whose lease ran out cannot overwrite the outcome a
    later claimant recorded.
    """
    t = utc(now)
    # not ``status = 'sending'``: an indexable status test can lure the planner off the primary key
    still_mine = TABLE.c.status.concat("") == "sending"
    for ids in _chunks(outcomes.sent):
        conn.execute(
            update(TABLE)
            .where(TABLE.c.id.in_(ids), still_mine)
            .values(status="sent", sent_at=t, reason=None, last_error=None)
        )
    by_id = TABLE.c.id == bindparam("_id")
    if outcomes.failed:
        conn.execute(
            update(TABLE)
            .where(by_id, still_mine)
            .values(
                status="failed",
                next_attempt_at=bindparam("_next"),
                last_error=bindparam("_err"),
                reason="retrying after error",
            ),
            [{"_id": i, "_next": n, "_err": e[:4000]} for i, n, e in outcomes.failed],
        )
    if outcomes.dead:
        conn.execute(
            update(TABLE)
            .where(by_id, still_mine)
            .values(status="dead", last_error=bindparam("_err"), reason="dead letter"),
            [{"_id": i, "_err": e[:4000]} for i, e in outcomes.dead],
        )
    if outcomes.suppressed:
        conn.execute(
            update(TABLE).where(by_id, still_mine).values(status="suppressed", reason=bindparam("_why")),
            [{"_id": i, "_why": r[:256]} for i, r in outcomes.suppressed],
        )
    if outcomes.deferred:
        conn.execute(
            update(TABLE)
            .where(by_id, still_mine)
            .values(
                status="pending",
                next_attempt_at=bindparam("_next"),
                reason=bindparam("_why"),
                attempts=TABLE.c.attempts - 1,
            ),
            [{"_id": i, "_next": n, "_why": r[:256]} for i, n, r in outcomes.deferred],
        )


def counts_by_status(conn: Connection | Session) -> dict[str, int]:
    """How many outbox messages are in each status."""
    from sqlalchemy import func

    rows = conn.execute(select(TABLE.c.status, func.count()).group_by(TABLE.c.status)).all()
    return {status: n for status, n in rows}
