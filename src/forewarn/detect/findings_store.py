"""Writing a trip wire's findings to the state store: one open finding per ongoing condition.

``sync_findings`` takes what a trip wire says is firing at ``as_of`` and reconciles it with the open findings
of that trip wire, set-based (one read, then bulk INSERT / UPDATE statements, never a query per finding):

- firing and already open: the open finding is updated (``last_detected_at``, score, confidence, severity,
  explanation, evidence);
- firing and not open: a new open finding (``first_detected_at = last_detected_at = as_of``);
- open and no longer firing: closed (``closed_at = as_of``), only for customers the run looked at.

Re-running for the same ``as_of`` changes nothing; a run for an ``as_of`` older than the latest one already
written for that trip wire writes nothing (the store is not rewound; backtests use ``score_history``).

>>> from forewarn.detect.base import empty_findings
>>> SyncResult(opened=1, updated=2, closed=0, skipped_unknown=0).changed
3
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from sqlalchemy import Engine, func, insert, select, update

from forewarn.state.db import transaction
from forewarn.state.models import Customer, Finding, utcnow

CHUNK = 5000  # rows per bulk statement / IN-list


@dataclass(frozen=True)
class SyncResult:
    opened: int
    updated: int
    closed: int
    skipped_unknown: int  # findings for customers the state store does not know (not written)
    stale: bool = False  # as_of was older than what the store already reflects: nothing written

    @property
    def changed(self) -> int:
        return self.opened + self.updated + self.closed


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def open_findings(engine: Engine, kind: str) -> pl.DataFrame:
    """The open findings of trip wire ``kind``: id, customer_id, condition, last_detected_at."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Finding.id, Finding.customer_id, Finding.condition, Finding.last_detected_at).where(
                Finding.kind == kind, Finding.status == "open"
            )
        ).all()
    schema = {
        "id": pl.Int64,
        "customer_id": pl.String,
        "condition": pl.String,
        "last_detected_at": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def watermark(engine: Engine, kind: str) -> datetime | None:
    """The latest ``as_of`` written for trip wire ``kind`` (detected or closed), None before the first run."""
    with engine.connect() as conn:
        detected, closed = conn.execute(
            select(func.max(Finding.last_detected_at), func.max(Finding.closed_at)).where(
                Finding.kind == kind
            )
        ).one()
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in (detected, closed) if t is not None]
    return max(times) if times else None


def known_customers(engine: Engine, ids: list[str]) -> set[str]:
    known: set[str] = set()
    with engine.connect() as conn:
        for part in _chunks(sorted(set(ids))):
            known.update(conn.execute(select(Customer.id).where(Customer.id.in_(part))).scalars())
    return known


def sync_findings(
    engine: Engine,
    kind: str,
    findings: pl.DataFrame,
    as_of: datetime,
    *,
    scope_customers: Iterable[str] | None = None,
) -> SyncResult:
    """Reconcile the open findings of ``kind`` with ``findings`` (``FINDINGS_SCHEMA``) firing at ``as_of``.

    ``scope_customers``: when the run covered only some customers (one bucket), only their findings may be
    closed; ``None`` means the run covered everyone.
    """
    mark = watermark(engine, kind)
    if mark is not None and as_of < mark:
        # the store already reflects a later time; a run for an earlier one must not rewind it
        return SyncResult(opened=0, updated=0, closed=0, skipped_unknown=0, stale=True)
    new = findings.filter(pl.col("kind") == kind) if findings.height else findings
    # one row per condition: a trip wire should not repeat one; never let a duplicate break the unique index
    new = new.unique(subset=["customer_id", "condition"], keep="last", maintain_order=True)
    skipped = 0
    if new.height:
        known = known_customers(engine, new["customer_id"].to_list())
        keep = new["customer_id"].is_in(list(known))
        skipped = int((~keep).sum())
        new = new.filter(keep)
    current = open_findings(engine, kind)
    matched = new.join(current, on=["customer_id", "condition"], how="inner")
    to_insert = new.join(current, on=["customer_id", "condition"], how="anti")
    to_update = matched
    gone = current.join(new, on=["customer_id", "condition"], how="anti")
    if scope_customers is not None:
        gone = gone.filter(pl.col("customer_id").is_in(list(set(scope_customers))))
    now = utcnow()
    with transaction(engine) as session:
        if to_insert.height:
            rows = [
                {
                    "customer_id": r["customer_id"],
                    "kind": kind,
                    "condition": r["condition"],
                    "status": "open",
                    "score": r["score"],
                    "confidence": r["confidence"],
                    "severity": r["severity"],
                    "explanation": r["explanation"],
                    "evidence": json.loads(r["evidence"]) if r["evidence"] else {},
                    "first_detected_at": as_of,
                    "last_detected_at": as_of,
                    "created_at": now,
                    "updated_at": now,
                }
                for r in to_insert.iter_rows(named=True)
            ]
            for part in _chunks(rows):
                session.execute(insert(Finding), part)
        if to_update.height:
            rows = [
                {
                    "id": r["id"],
                    "score": r["score"],
                    "confidence": r["confidence"],
                    "severity": r["severity"],
                    "explanation": r["explanation"],
                    "evidence": json.loads(r["evidence"]) if r["evidence"] else {},
                    "last_detected_at": as_of,
                    "updated_at": now,
                }
                for r in to_update.iter_rows(named=True)
            ]
            for part in _chunks(rows):
                session.execute(update(Finding), part)  # bulk UPDATE by primary key (executemany)
        ids = gone["id"].to_list()
        for part in _chunks(ids):
            session.execute(
                update(Finding)
                .where(Finding.id.in_(part))
                .values(status="closed", closed_at=as_of, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    return SyncResult(
        opened=to_insert.height, updated=to_update.height, closed=len(ids), skipped_unknown=skipped
    )
