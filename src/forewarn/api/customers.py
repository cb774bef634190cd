"""API routes: customers, services and dependencies (``PUT`` upserts a list; re-sending changes nothing), and
a customer's right of access (``GET /v1/customers/{id}/export``) and erasure (``DELETE /v1/customers/{id}``).

A list with any invalid record gets a 422 whose ``detail`` names the index and field, and nothing is stored,
unless ``?partial=true`` (then the good records are stored and the bad ones reported with a 200).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import Engine

from forewarn.api.auth import Caller, requires
from forewarn.api.deps import get_ctx
from forewarn.api.signals import error_detail
from forewarn.context import Context
from forewarn.privacy import subject
from forewarn.signals.store import SignalStore
from forewarn.state import audit
from forewarn.state import customers as entities
from forewarn.state.db import transaction

router = APIRouter(prefix="/v1", tags=["customers"])


class UpsertCounts(BaseModel):
    inserted: int
    updated: int
    rejected: int
    errors: list[dict[str, Any]] = []


def _upsert(
    engine: Engine,
    fn: Callable[..., entities.UpsertResult],
    model: type[BaseModel],
    records: list[dict[str, Any]],
    partial: bool,
    caller: Caller,
    what: str,
) -> UpsertCounts:
    pairs = list(enumerate(records))
    if not partial:
        _, rejected, errors = entities.validate_records(model, pairs, "api")
        if rejected:
            raise HTTPException(422, error_detail(errors, "items"))
    res = fn(engine, pairs, source="api")
    if res.rejected and not partial:  # found only when writing (e.g. a dependency's unknown customer)
        raise HTTPException(422, error_detail(res.errors, "items"))
    if res.inserted or res.updated:
        with transaction(engine) as s:
            counts = {"inserted": res.inserted, "updated": res.updated, "rejected": res.rejected}
            audit.record(s, caller.actor, f"{what}.upserted", what, ip=caller.ip, detail=counts)
    return UpsertCounts(
        inserted=res.inserted,
        updated=res.updated,
        rejected=res.rejected,
        errors=error_detail(res.errors, "items"),
    )


PARTIAL = Query(False, description="store the good records of a list that has bad ones")


@router.put("/customers", response_model=UpsertCounts)
def put_customers(
    customers: list[dict[str, Any]] = Body(
        description="customer records (id, name, email, timezone, consent...)"
    ),
    partial: bool = PARTIAL,
    caller: Caller = requires("customers:write"),
    ctx: Context = Depends(get_ctx),
) -> UpsertCounts:
    """Insert or update customers with their consent."""
    return _upsert(
        ctx.engine, entities.upsert_customers, entities.CustomerIn, customers, partial, caller, "customers"
    )


@router.put("/services", response_model=UpsertCounts)
def put_services(
    services: list[dict[str, Any]] = Body(description="services (id, name, description)"),
    partial: bool = PARTIAL,
    caller: Caller = requires("customers:write"),
    ctx: Context = Depends(get_ctx),
) -> UpsertCounts:
    """Insert or update services."""
    return _upsert(
        ctx.engine, entities.upsert_services, entities.ServiceIn, services, partial, caller, "services"
    )


@router.put("/dependencies", response_model=UpsertCounts)
def put_dependencies(
    dependencies: list[dict[str, Any]] = Body(description="(customer_id, service_id, region) rows"),
    partial: bool = PARTIAL,
    caller: Caller = requires("customers:write"),
    ctx: Context = Depends(get_ctx),
) -> UpsertCounts:
    """Add which customers depend on which service in which region."""
    return _upsert(
        ctx.engine,
        entities.upsert_dependencies,
        entities.DependencyIn,
        dependencies,
        partial,
        caller,
        "dependencies",
    )


class ErasureOut(BaseModel):
    customer_id: str
    pseudonym: str
    found: bool
    customer_deleted: bool
    state_rows: dict[str, int]
    messages_kept_as_tombstones: int
    messages_suppressed: int
    signals: dict[str, int]


def _signal_store(ctx: Context) -> SignalStore:
    try:
        return ctx.signals
    except Exception as e:  # e.g. another process holds the DuckDB file
        raise HTTPException(503, f"the signal store is not available: {e}") from None


@router.get("/customers/{customer_id}/export")
def export_customer(
    customer_id: str, ctx: Context = Depends(get_ctx), caller: Caller = requires("customers:read")
) -> dict[str, Any]:
    """Everything held about one customer, from both stores (right of access); 404 when nothing is held."""
    try:
        return subject.export(ctx.engine, _signal_store(ctx), customer_id)
    except subject.NotFound as e:
        raise HTTPException(404, str(e)) from None


@router.delete("/customers/{customer_id}", response_model=ErasureOut)
def erase_customer(
    customer_id: str, ctx: Context = Depends(get_ctx), caller: Caller = requires("admin")
) -> ErasureOut:
    """Erase one customer from both stores (right to erasure); sent messages stay as pseudonymous
    tombstones. Idempotent: erasing again reports ``found: false`` and changes nothing."""
    report = subject.erase(ctx.engine, _signal_store(ctx), customer_id, secret=ctx.settings.secret_key)
    if report.found:  # the audit names the pseudonym, never the erased id
        with transaction(ctx.engine) as s:
            audit.record(s, caller.actor, "customer.erased", report.pseudonym, ip=caller.ip)
    return ErasureOut(**report.as_dict())
