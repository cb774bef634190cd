"""API routes: the public status page (``/status``, ``/status/{service_id}``) and its JSON
(``/status.json``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse

from forewarn.api.auth import PUBLIC
from forewarn.api.deps import get_ctx
from forewarn.api.errors import errors
from forewarn.context import Context
from forewarn.incidents.status import status_data
from forewarn.state.db import transaction

router = APIRouter(tags=["status"], dependencies=[PUBLIC])  # the public status page

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent.parent / "incidents" / "templates")),
    autoescape=True,  # incident titles and messages are user input
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(value: Any) -> str:
    """An ISO time as a person reads it (to the minute, UTC).

    >>> when("2026-12-06T01:53:07.123456+00:00")
    '6 Dec 2026, 01:53 UTC'
    >>> when(None)
    ''
    """
    if not value:
        return ""
    try:
        t = datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        return str(value)
    return f"{t.day} {t:%b %Y, %H:%M} UTC"


_ENV.filters["when"] = when


def _data(ctx: Context, service_id: str | None) -> dict[str, Any]:
    try:
        with transaction(ctx.engine) as s:
            return status_data(s, service_id)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/status.json")
def status_json(ctx: Context = Depends(get_ctx)) -> dict[str, Any]:
    """Every public service: state, current incidents, incidents of the last 90 days."""
    return _data(ctx, None)


@router.get("/status", response_class=HTMLResponse)
def status_page(ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    data = _data(ctx, None)
    return HTMLResponse(_ENV.get_template("status.html").render(data=data, title="Service status", base=""))


@router.get("/status/{service_id}.json", responses=errors(404))
def service_status_json(service_id: str, ctx: Context = Depends(get_ctx)) -> dict[str, Any]:
    return _data(ctx, service_id)


@router.get("/status/{service_id}", response_class=HTMLResponse, responses=errors(404))
def service_status_page(service_id: str, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    data = _data(ctx, service_id)
    name = data["services"][0]["name"]
    return HTMLResponse(_ENV.get_template("status.html").render(data=data, title=f"{name} status", base=""))
