"""The dashboard: server-rendered Jinja2 pages with htmx for live parts. No Node build step.

Every page needs a signed-in user (:mod:`forewarn.web.auth`); retrying a dead letter needs the agent role;
the audit log (``/audit``) and users (``/users``) are for admins.
Pages: ``/`` (overview), ``/incidents``, ``/incidents/{id}``, ``/findings``, ``/customers/{id}``, ``/outbox``,
``/playbooks``, ``/audit`` (admins). The same data is served as JSON under ``/v1/metrics/...`` (see ``forewarn.api.metrics``).

>>> sorted(r.path for r in router.routes if r.name.startswith("page_"))[:3]
['/', '/audit', '/customers/{customer_id}']
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from forewarn.context import Context
from forewarn.measure import views
from forewarn.measure.cache import StaleWhileRevalidate
from forewarn.measure.metrics import Period, SignalReader, outcome_metrics
from forewarn.state import audit, users
from forewarn.state.db import transaction
from forewarn.web import auth
from forewarn.web.deps import get_ctx
from forewarn.web.render import render

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_FILES = {"htmx.min.js": "text/javascript", "forewarn.css": "text/css"}

# every page needs a signed-in user (any role reads); what changes state needs its role and the CSRF token
router = APIRouter(include_in_schema=False, dependencies=[Depends(auth.signed_in)])
public = APIRouter(include_in_schema=False)  # the stylesheet and htmx, which the sign-in page needs too


_readers_lock = threading.Lock()


def signal_reader(ctx: Context) -> SignalReader | None:
    """The context's signal store (thread-safe: a cursor per read), or None when it cannot be opened.

    Without a signal store the pages still render from the state store and say what is missing.
    """
    with _readers_lock:
        reader = ctx.__dict__.get("_dashboard_signals")
        if reader is None:
            try:
                reader = ctx.signals
            except Exception as e:  # e.g. another process holds the DuckDB file for writing
                log.warning("signal store unavailable for the dashboard: %s", e)
                reader = False
            ctx.__dict__["_dashboard_signals"] = reader
    return reader or None


# The overview's outcome metrics are recomputed at most this often, however many people watch it.
OVERVIEW_FRESH_S = 30.0


def overview_data(ctx: Context, period: Period, bucket: str = "day") -> dict[str, Any]:
    """The overview: outcome metrics (cached, stale-while-revalidate) and live attention counts."""
    with _readers_lock:
        cache = ctx.__dict__.setdefault("_overview_cache", StaleWhileRevalidate(OVERVIEW_FRESH_S))
    key = (period.start, period.end, period.segment, bucket)
    entry = cache.get(
        key, lambda: outcome_metrics(ctx.engine, period, signals=signal_reader(ctx), bucket_size=bucket)
    )
    data = views.overview_view(ctx.engine, period, metrics=entry.value)
    data["computed"] = {"at": entry.computed_at.isoformat(), "seconds": round(entry.seconds, 3)}
    data["refresh_s"] = OVERVIEW_FRESH_S
    return data


# Notice progress across all incidents is recomputed at most this often (the page polls every 10 s).
INCIDENTS_FRESH_S = 5.0


def incidents_data(ctx: Context, limit: int = 50) -> dict[str, Any]:
    """Recent incidents with their notice progress, shared by everyone polling within a few seconds."""
    with _readers_lock:
        cache = ctx.__dict__.setdefault("_incidents_cache", StaleWhileRevalidate(INCIDENTS_FRESH_S, 8))
    return cache.get(limit, lambda: views.incidents_view(ctx.engine, limit=limit)).value


# Counts that read a whole index (outbox by status, decisions per playbook) are shared this long.
COUNTS_FRESH_S = 5.0


def shared(ctx: Context, name: str, fn: Any, fresh_s: float = COUNTS_FRESH_S) -> Any:
    """``fn()`` computed at most once per ``fresh_s`` for everyone (stale-while-revalidate)."""
    with _readers_lock:
        cache = ctx.__dict__.setdefault("_shared_cache", StaleWhileRevalidate(fresh_s, 32))
    return cache.get(name, fn).value


def outbox_counts(ctx: Context) -> dict[str, int]:
    def compute() -> dict[str, int]:
        with ctx.engine.connect() as conn:
            return views.outbox_counts(conn)

    return shared(ctx, "outbox_counts", compute)


def default_period(ctx: Context, days: int = 30, segment: str | None = None) -> Period:
    """The ``days`` up to the newest activity in the store (a simulated history need not end today)."""
    latest = views.latest_activity(ctx.engine)
    return Period.last(days, now=latest, segment=segment) if latest else Period.last(days, segment=segment)


def resolve_period(
    ctx: Context, start: str | None, end: str | None, segment: str | None, days: int = 30
) -> Period:
    """A period from optional ``from``/``to`` query values; a clear 400 for bad input."""
    try:
        if start and end:
            return Period.parse(start, end, segment)
        base = default_period(ctx, days, segment)
        if start:
            return Period.parse(start, base.end, segment)
        if end:
            e = Period.parse(end, "9999-12-31").start
            return Period(e - timedelta(days=days), e, segment or None)
        return base
    except ValueError as e:
        raise HTTPException(400, f"bad period: {e} (expected from/to as dates such as 2026-03-01)") from None


# ---- pages ------------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, name="page_overview")
def overview(
    request: Request,
    ctx: Context = Depends(get_ctx),
    start: str | None = Query(None, alias="from"),
    end: str | None = Query(None, alias="to"),
    segment: str | None = None,
    bucket: str = "day",
) -> HTMLResponse:
    if bucket not in ("day", "week"):
        raise HTTPException(400, "bucket must be 'day' or 'week'")
    period = resolve_period(ctx, start, end, segment)
    data = overview_data(ctx, period, bucket)
    shown_end = period.end - timedelta(days=1)
    form = {
        "from": period.start.date().isoformat(),
        "to": period.end.date().isoformat(),
        "to_inclusive": shown_end.date().isoformat(),
        "segment": segment or "",
        "bucket": bucket,
    }
    return render(request, "overview.html", {"page": "overview", "d": data, "form": form})


@router.get("/incidents", response_class=HTMLResponse, name="page_incidents")
def incidents(request: Request, ctx: Context = Depends(get_ctx), partial: bool = False) -> HTMLResponse:
    data = incidents_data(ctx)
    name = "_incident_rows.html" if partial else "incidents.html"
    return render(request, name, {"page": "incidents", "d": data})


@router.get("/incidents/{incident_id}", response_class=HTMLResponse, name="page_incident")
def incident(request: Request, incident_id: int, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    try:
        data = views.incident_view(ctx.engine, incident_id)
    except views.NotFound as e:
        return render(request, "error.html", {"page": "incidents", "message": str(e)}, status_code=404)
    return render(request, "incident.html", {"page": "incidents", "d": data})


@router.get("/incidents/{incident_id}/progress", response_class=HTMLResponse, name="incident_progress")
def incident_progress(request: Request, incident_id: int, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    try:
        data = views.incident_view(ctx.engine, incident_id, limit=0)
    except views.NotFound as e:
        raise HTTPException(404, str(e)) from None
    return render(request, "_progress.html", {"d": data})


@router.get("/findings", response_class=HTMLResponse, name="page_findings")
def findings(request: Request, ctx: Context = Depends(get_ctx), kind: str | None = None) -> HTMLResponse:
    data = views.findings_view(ctx.engine, kind=kind or None)
    return render(request, "findings.html", {"page": "findings", "d": data, "kind": kind or ""})


@router.get("/customers/{customer_id}", response_class=HTMLResponse, name="page_customer")
def customer(request: Request, customer_id: str, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    """The customer's page from the state store at once; the signals (a scan of the history) load after."""
    try:
        data = views.customer_view(ctx.engine, customer_id, signals=None)
    except views.NotFound as e:
        return render(request, "error.html", {"page": "findings", "message": str(e)}, status_code=404)
    pending = signal_reader(ctx) is not None
    return render(request, "customer.html", {"page": "customers", "d": data, "pending": pending})


@router.get("/customers/{customer_id}/story", response_class=HTMLResponse, name="customer_story")
def customer_story(request: Request, customer_id: str, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    """The whole timeline with signals and usage charts, swapped into the customer page by htmx."""
    try:
        data = views.customer_view(
            ctx.engine, customer_id, signals=signal_reader(ctx), now=views.latest_activity(ctx.engine)
        )
    except views.NotFound as e:
        raise HTTPException(404, str(e)) from None
    return render(request, "_customer_story.html", {"d": data, "pending": False})


@router.get("/outbox", response_class=HTMLResponse, name="page_outbox")
def outbox(
    request: Request,
    ctx: Context = Depends(get_ctx),
    status: str | None = None,
    channel: str | None = None,
    before: int | None = None,
    retried: int | None = None,
    not_retried: int | None = None,
) -> HTMLResponse:
    try:
        data = views.outbox_view(
            ctx.engine,
            status=status or None,
            channel=channel or None,
            before_id=before,
            counts=None if retried or not_retried else outbox_counts(ctx),
        )
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    next_url = None
    if data["next_before_id"]:
        q = {k: v for k, v in (("status", status), ("channel", channel)) if v}
        next_url = "/outbox?" + urlencode(q | {"before": data["next_before_id"]})
    return render(
        request,
        "outbox.html",
        {"page": "outbox", "d": data, "next_url": next_url, "retried": retried, "not_retried": not_retried},
    )


def _same_origin(request: Request) -> bool:
    """A browser POST from another site carries its Origin; refuse it (no cross-site retries)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


@router.post("/outbox/{outbox_id}/retry", name="outbox_retry")
def outbox_retry(
    request: Request,
    outbox_id: int,
    ctx: Context = Depends(get_ctx),
    user: users.UserInfo = Depends(auth.require("agent")),
    back: str = Form("/outbox?status=dead"),
) -> Response:
    if not _same_origin(request):
        raise HTTPException(403, "cross-site request refused")
    ok = views.retry_dead_letter(
        ctx.engine, outbox_id, actor=auth.actor(user), ip=auth.client_address(request)
    )
    if not back.startswith("/outbox"):
        back = "/outbox"
    sep = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{sep}{'retried' if ok else 'not_retried'}={outbox_id}", status_code=303)


AUDIT_PAGE = 100


@router.get(
    "/audit", response_class=HTMLResponse, name="page_audit", dependencies=[Depends(auth.require("admin"))]
)
def audit_page(
    request: Request,
    ctx: Context = Depends(get_ctx),
    actor: str | None = None,
    action: str | None = None,
    before: int | None = None,
) -> HTMLResponse:
    """The audit log, newest first (admins only): who changed what, when and from where."""
    with transaction(ctx.engine) as s:
        rows = audit.entries(
            s, actor=actor or None, action=action or None, before_id=before, limit=AUDIT_PAGE + 1
        )
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    next_url = None
    if more:
        q = {k: v for k, v in (("actor", actor), ("action", action)) if v}
        next_url = "/audit?" + urlencode(q | {"before": rows[-1].id})
    form = {"actor": actor or "", "action": action or ""}
    return render(request, "audit.html", {"page": "audit", "rows": rows, "form": form, "next_url": next_url})


@router.get("/playbooks", response_class=HTMLResponse, name="page_playbooks")
def playbooks(request: Request, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    data = shared(ctx, "playbooks", lambda: views.playbooks_view(ctx.engine, home=ctx.settings.home))
    return render(request, "playbooks.html", {"page": "playbooks", "d": data})


@public.get("/static/{name}", name="static")
def static(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(
        STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "public, max-age=3600"}
    )
