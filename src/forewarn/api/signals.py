"""API routes: signals. ``POST /v1/signals`` ingests one JSON batch of events into the signal store.

The body is ``{"kind": "usage", "events": [...]}``, or ``{"events": [...]}`` with each event carrying its own
``kind``. By default a batch is all-or-nothing: any bad event gets a 422 whose ``detail`` lists, per problem,
``loc: ["body", "events", <index>, <field>]``, the message and what was expected, and nothing is stored.
``?partial=true`` stores the good events and reports the bad ones with a 200. Re-sending a batch is a no-op
(events are idempotent by ``event_id``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pydantic_core
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from forewarn.api.auth import requires
from forewarn.api.deps import get_ctx
from forewarn.context import Context
from forewarn.rows import RowError
from forewarn.signals.group import Arrival, ingest_batch
from forewarn.signals.ingest import IngestReport
from forewarn.signals.schema import KINDS

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


async def _body(request: Request) -> AsyncIterator[tuple[bytes, Arrival]]:
    # announced before its body is read, so that a group about to run waits for it (see Arrival)
    arrival = Arrival(get_ctx(request))
    try:
        yield await request.body(), arrival
    finally:
        arrival.close()


def parse_batch(body: bytes) -> tuple[str | None, list[Any]]:
    """The ``kind`` and ``events`` of a request body; a 422 naming what is wrong with the envelope.

    The events themselves are validated (vectorised) by ingestion; the envelope check is the model's only
    when the cheap one fails, for its error messages.

    >>> parse_batch(b'{"kind": "usage", "events": [{"event_id": "e1"}]}')
    ('usage', [{'event_id': 'e1'}])
    >>> try:
    ...     parse_batch(b'{"kind": "usage"}')
    ... except RequestValidationError as e:
    ...     print(e.errors()[0]["loc"])
    ('body', 'events')
    """
    if not body:  # as FastAPI words a missing body
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        data = pydantic_core.from_json(body, cache_strings="keys")
    except ValueError:
        try:  # the standard parser words the error, and accepts what it alone takes (NaN)
            data = json.loads(body)
        except ValueError as e:  # as FastAPI words a body that is not JSON
            error = {
                "type": "json_invalid",
                "loc": ("body", getattr(e, "pos", 0)),
                "msg": "JSON decode error",
            }
            raise RequestValidationError(
                [{**error, "input": {}, "ctx": {"error": getattr(e, "msg", str(e))}}]
            ) from None
    if type(data) is dict and type(data.get("kind")) in (str, type(None)):
        events = data.get("events")
        if type(events) is list and all(type(e) is dict for e in events):
            return data.get("kind"), events
    try:
        batch = SignalBatch.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None
    return batch.kind, batch.events


@router.post(
    "/signals",
    response_model=IngestCounts,
    dependencies=[requires("signals:write")],  # before the body is read
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SignalBatch.model_json_schema()}},
        }
    },
)
def post_signals(
    body: tuple[bytes, Arrival] = Depends(_body),
    partial: bool = Query(False, description="store the good events of a batch that has bad ones"),
    ctx: Context = Depends(get_ctx),
) -> IngestCounts:
    """Ingest a batch of signal events; 422 (nothing stored) when any event is invalid, unless ``partial``.

    Concurrent batches are validated and stored together (``forewarn.signals.group``), each with its own
    result.
    """
    raw, arrival = body
    try:
        kind, events = parse_batch(raw)
    except BaseException:
        arrival.close()
        raise
    if kind is not None and kind not in KINDS:
        arrival.close()
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "kind"],
                    "msg": f"unknown signal kind; expected one of {', '.join(KINDS)}",
                    "type": "value_error",
                    "input": kind,
                }
            ],
        )
    report = ingest_batch(ctx, kind, events, source="api", strict=not partial, arrival=arrival)
    if report.rejected and not partial:
        raise HTTPException(422, error_detail(report.errors, "events"))
    return _counts(report, "events")
