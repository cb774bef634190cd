"""API routes: ``GET /metrics`` for Prometheus, and the JSON behind each dashboard page under ``/v1/metrics``.

>>> "/metrics" in {r.path for r in router.routes}
True
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import PlainTextResponse

from forewarn.api.auth import requires
from forewarn.api.deps import get_ctx
from forewarn.api.errors import MAX_ID, Id, errors
from forewarn.context import Context
from forewarn.measure import views
from forewarn.measure.cache import StaleWhileRevalidate
from forewarn.measure.metrics import outcome_metrics
from forewarn.measure.ops import prometheus_text
from forewarn.web.routes import incidents_data, overview_data, resolve_period, signal_reader

router = APIRouter()
METRICS = requires("metrics:read")
CUSTOMERS = requires("customers:read")  # a customer's timeline is personal data

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scrapes within this many seconds share one computation (the counts scan the outbox's indexes).
PROMETHEUS_FRESH_S = 10.0
_cache_lock = threading.Lock()


@router.get("/metrics", tags=["ops"], response_class=PlainTextResponse, dependencies=[METRICS])
def metrics(ctx: Context = Depends(get_ctx)) -> PlainTextResponse:
    """Operator metrics in the Prometheus text exposition format (recomputed at most every 10 s)."""
    with _cache_lock:
        cache = ctx.__dict__.setdefault("_prometheus_cache", StaleWhileRevalidate(PROMETHEUS_FRESH_S, 1))
    text = cache.get("metrics", lambda: prometheus_text(ctx.engine)).value
    return PlainTextResponse(text, media_type=PROMETHEUS_TYPE)


def _bucket(bucket: str) -> str:
    if bucket not in ("day", "week"):
        raise HTTPException(400, "bucket must be 'day' or 'week'")
    return bucket


@router.get("/v1/metrics/outcomes", tags=["metrics"], dependencies=[METRICS], responses=errors(400))
def outcomes(
    ctx: Context = Depends(get_ctx),
    start: str | None = Query(None, alias="from", description="first day (UTC), e.g. 2026-03-01"),
    end: str | None = Query(None, alias="to", description="day after the last (exclusive)"),
    segment: str | None = None,
    bucket: str = "day",
    window_days: int = Query(14, ge=1, le=365),
) -> dict[str, Any]:
    """Outcome metrics for a period and segment (default: the 30 days up to the newest activity)."""
    period = resolve_period(ctx, start, end, segment)
    return outcome_metrics(
        ctx.engine, period, signals=signal_reader(ctx), bucket_size=_bucket(bucket), window_days=window_days
    )


@router.get("/v1/metrics/overview", tags=["metrics"], dependencies=[METRICS], responses=errors(400))
def overview(
    ctx: Context = Depends(get_ctx),
    start: str | None = Query(None, alias="from"),
    end: str | None = Query(None, alias="to"),
    segment: str | None = None,
    bucket: str = "day",
) -> dict[str, Any]:
    """The overview page's data: outcome metrics (recomputed at most every 30 s) and what needs attention."""
    period = resolve_period(ctx, start, end, segment)
    return overview_data(ctx, period, _bucket(bucket))


@router.get("/v1/metrics/incidents", tags=["metrics"], dependencies=[METRICS])
def incidents(ctx: Context = Depends(get_ctx), limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    """Recent incidents with notice progress (affected, queued, delivered, failed, tickets)."""
    return incidents_data(ctx, limit)


@router.get(
    "/v1/metrics/incidents/{incident_id}", tags=["metrics"], dependencies=[METRICS], responses=errors(404)
)
def incident(
    incident_id: Id, ctx: Context = Depends(get_ctx), limit: int = Query(200, ge=0, le=5000)
) -> dict[str, Any]:
    """One incident: progress, notified customers, linked tickets."""
    try:
        return views.incident_view(ctx.engine, incident_id, limit=limit)
    except views.NotFound as e:
        raise HTTPException(404, str(e)) from None


@router.get("/v1/metrics/findings", tags=["metrics"], dependencies=[METRICS])
def findings(
    ctx: Context = Depends(get_ctx), kind: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> dict[str, Any]:
    """Open findings ranked, and the customers most at risk."""
    return views.findings_view(ctx.engine, kind=kind, limit=limit)


@router.get(
    "/v1/metrics/customers/{customer_id}", tags=["metrics"], dependencies=[CUSTOMERS], responses=errors(404)
)
def customer(
    customer_id: str, ctx: Context = Depends(get_ctx), days: int = Query(30, ge=1, le=3650)
) -> dict[str, Any]:
    """One customer's timeline of signals (the last ``days``), findings, notices and tickets."""
    try:
        return views.customer_view(
            ctx.engine,
            customer_id,
            signals=signal_reader(ctx),
            days=days,
            now=views.latest_activity(ctx.engine),
        )
    except views.NotFound as e:
        raise HTTPException(404, str(e)) from None


@router.get("/v1/metrics/outbox", tags=["metrics"], dependencies=[METRICS], responses=errors(400))
def outbox(
    ctx: Context = Depends(get_ctx),
    status: str | None = None,
    channel: str | None = None,
    before: int | None = Query(None, ge=1, le=MAX_ID),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Outbox messages newest first, filtered by status and channel."""
    try:
        return views.outbox_view(ctx.engine, status=status, channel=channel, before_id=before, limit=limit)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


@router.get("/v1/metrics/playbooks", tags=["metrics"], dependencies=[METRICS])
def playbooks(ctx: Context = Depends(get_ctx)) -> dict[str, Any]:
    """Playbooks: mode, decisions by status, recent decisions, backtest reports."""
    return views.playbooks_view(ctx.engine, home=ctx.settings.home)
