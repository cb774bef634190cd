"""A customer's right of access (everything we hold about them) and right to erasure, across both stores.

:func:`export` gathers the customer's record, consents, dependencies, incidents that affected them, findings,
tickets, every message (with its text) and every signal. :func:`erase` removes all of it: the customer and
what hangs off them in the state store, and their signals in the signal store. Messages already in the outbox
stay as a pseudonymous tombstone (channel, topic, status and times, so the outcome counts hold) with the
address, subject, body, payload and error cleared and the customer id replaced by a keyed pseudonym
(:func:`pseudonym`); messages not yet sent are suppressed. Erasing again finds nothing more and changes
nothing (or finishes an erasure that stopped half way, e.g. when the signal store was busy).

Not reached: files written outside the two stores (a file channel's delivery log, HTML backtest reports,
the simulator's files), and a later import of old data that names the customer again.

>>> pseudonym("C0000042", "a-secret")
'erased:566e79690840e12faea8'
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from forewarn.signals.schema import KINDS
from forewarn.signals.store import SignalStore
from forewarn.state.db import transaction
from forewarn.state.models import (
    AffectedCustomer,
    Consent,
    Customer,
    Dependency,
    Finding,
    OutboxMessage,
    Ticket,
)

# messages that have not left (or could be retried): an erased customer is not written to any more
UNSENT = ("pending", "failed", "deferred", "held", "dead")
# the customer's rows in the state store, by table (the customer itself first)
STATE_TABLES: dict[str, Any] = {
    "customer": Customer,
    "consents": Consent,
    "dependencies": Dependency,
    "affected_by_incidents": AffectedCustomer,
    "findings": Finding,
    "tickets": Ticket,
    "messages": OutboxMessage,
}


class NotFound(LookupError):
    """Neither store holds anything about this customer."""


def pseudonym(customer_id: str, secret: str) -> str:
    """The stable pseudonym an erased customer's tombstones carry: a keyed hash (HMAC-SHA256) of the id, so
    it cannot be turned back into the id without the instance's secret, and erasing twice gives the same."""
    digest = hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
    return f"erased:{digest[:20]}"


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _rows(conn: sa.Connection, model: Any, customer_id: str) -> list[dict[str, Any]]:
    table = model.__table__
    column = table.c.id if model is Customer else table.c.customer_id
    order = [c for c in table.primary_key.columns]
    rows = conn.execute(sa.select(table).where(column == customer_id).order_by(*order)).mappings()
    return [{k: _json(v) for k, v in row.items()} for row in rows]


def export(engine: Engine, signals: SignalStore | None, customer_id: str) -> dict[str, Any]:
    """Everything held about ``customer_id``, as JSON-ready data; raises ``NotFound`` when there is nothing.

    ``signals=None`` leaves the signal store out (and says so under ``"signals"``).
    """
    with engine.connect() as conn:
        state = {name: _rows(conn, model, customer_id) for name, model in STATE_TABLES.items()}
    held: dict[str, Any] = {}
    if signals is not None:
        for kind in KINDS.values():
            if "customer_id" in kind.columns:
                rows = signals.read_arrow(kind.name, customers=[customer_id]).to_pylist()
                if rows:
                    held[kind.name] = [{k: _json(v) for k, v in r.items()} for r in rows]
    if not any(state.values()) and not held:
        raise NotFound(f"no data held about customer {customer_id!r}")
    customer = state.pop("customer")
    return {
        "customer_id": customer_id,
        "customer": customer[0] if customer else None,
        **state,
        "signals": held if signals is not None else "not read (the signal store was not available)",
    }


@dataclass
class Erasure:
    customer_id: str
    pseudonym: str
    customer_deleted: bool = False
    state_rows: dict[str, int] = field(default_factory=dict)  # deleted per table
    messages_kept_as_tombstones: int = 0
    messages_suppressed: int = 0
    signals: dict[str, int] = field(default_factory=dict)  # deleted per kind

    @property
    def found(self) -> bool:
        return bool(self.customer_deleted or self.messages_kept_as_tombstones or self.signals)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"found": self.found}


def erase(engine: Engine, signals: SignalStore, customer_id: str, *, secret: str) -> Erasure:
    """Erase ``customer_id`` from both stores (idempotent); see the module's notes for what stays."""
    alias = pseudonym(customer_id, secret)
    report = Erasure(customer_id, alias)
    with transaction(engine) as s:
        counted = {
            name: s.scalar(
                sa.select(sa.func.count()).select_from(model).where(model.customer_id == customer_id)
            )
            for name, model in STATE_TABLES.items()
            if model not in (Customer, OutboxMessage)
        }
        out = OutboxMessage.__table__
        report.messages_suppressed = s.execute(
            sa.update(out)
            .where(out.c.customer_id == customer_id, out.c.status.in_(UNSENT))
            .values(status="suppressed", reason="customer erased")
        ).rowcount
        report.messages_kept_as_tombstones = s.execute(
            sa.update(out)
            .where(out.c.customer_id == customer_id)
            .values(
                customer_id=alias,
                idempotency_key=sa.literal(alias + ":") + sa.cast(out.c.id, sa.String),
                thread_key=alias,
                address=None,
                subject="",
                body="",
                payload={},
                last_error=None,
            )
        ).rowcount
        # the rest goes with the customer (ON DELETE CASCADE and the delete triggers of migration 0006)
        deleted = s.execute(sa.delete(Customer).where(Customer.id == customer_id)).rowcount
        report.customer_deleted = bool(deleted)
        # rows left behind without a customer row (a store filled before its foreign keys, or no customer)
        for model in (AffectedCustomer, Finding, Ticket, Dependency, Consent):
            s.execute(sa.delete(model).where(model.customer_id == customer_id))
        report.state_rows = {k: v for k, v in counted.items() if v}
    report.signals = signals.erase_customer(customer_id)
    return report
