"""API routes: signals. ``POST /v1/signals`` ingests one JSON batch of events into the signal store.

The body is ``{"kind": "usage", "events": [...]}``, or ``{"events": [...]}`` with each event carrying its own
``kind``. By default a batch is all-or-nothing: any bad event gets a 422 whose ``detail`` lists, per problem,
``loc: ["body", "events", <index>, <field>]``, the message and what was expected, and nothing is stored.
``?partial=true`` stores the good events and reports the bad ones with a 200. Re-sending a batch is a no-op
(events are idempotent by ``event_id``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from forewarn.api.deps import get_ctx
from forewarn.context import Context
from forewarn.signals.ingest import IngestReport, ingest_records
from forewarn.signals.schema import KINDS
from forewarn.signals.validate import RowError

router = APIRouter(prefix="/v1", tags=["signals"])


class SignalBatch(BaseModel):
    kind: str | None = Field(None, description="the kind of every event; omit when each event has its own")
    events: list[dict[str, Any]] = Field(description="the events, each with event_id, customer_id, ts, ...")


class IngestCounts(BaseModel):
    new: int
    duplicate: int
    rejected: int
    errors: list[dict[str, Any]] = []


def error_detail(errors: list[RowError], collection: str) -> list[dict[str, Any]]:
    """FastAPI-style validation details: ``loc`` names the item's index and field."""
    return [
        {
            "loc": ["body", collection, e.line, e.field],
            "msg": f"{e.message}; expected {e.expected}",
            "type": "value_error",
            "input": e.got,
            "ctx": {"expected": e.expected},
        }
        for e in errors
    ]


def _counts(report: IngestReport, collection: str) -> IngestCounts:
    return IngestCounts(
        new=report.new,
        duplicate=report.duplicate,
        rejected=report.rejected,
        errors=error_detail(report.errors, collection),
    )


@router.post("/signals", response_model=IngestCounts)
def post_signals(
    batch: SignalBatch,
    partial: bool = Query(False, description="store the good events of a batch that has bad ones"),
    ctx: Context = Depends(get_ctx),
) -> IngestCounts:
    """Ingest a batch of signal events; 422 (nothing stored) when any event is invalid, unless ``partial``."""
    if batch.kind is not None and batch.kind not in KINDS:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "kind"],
                    "msg": f"unknown signal kind; expected one of {', '.join(KINDS)}",
                    "type": "value_error",
                    "input": batch.kind,
                }
            ],
        )
    report = ingest_records(ctx, batch.kind, batch.events, source="api", strict=not partial)
    if report.rejected and not partial:
        raise HTTPException(422, error_detail(report.errors, "events"))
    return _counts(report, "events")
