"""Rendering dashboard pages: the Jinja2 environment, its filters, and what every page is given.

Every page gets ``user`` (the signed-in user, or None) and ``csrf`` (their session's CSRF token, which forms
post as ``csrf_token`` and htmx sends as the ``X-CSRF-Token`` header).

>>> _dur(3725), _pct(0.1234), _num(1234.5, 1)
('1h 02m', '12.3%', '1,234.5')
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from forewarn import __version__
from forewarn.measure import views
from forewarn.web import charts


def _signed_in(request: Request) -> dict[str, Any]:
    return {"user": getattr(request.state, "user", None), "csrf": getattr(request.state, "csrf", "")}


templates = Jinja2Templates(
    directory=str(Path(__file__).parent / "templates"), context_processors=[_signed_in]
)


def _dt(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return "" if value is None else str(value)


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _dur(seconds: Any) -> str:
    if seconds is None:
        return "–"
    s = int(round(float(seconds)))
    neg, s = s < 0, abs(s)
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    text = f"{d}d {h}h" if d else f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"
    return ("-" if neg else "") + text


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[str, float]]:
    return [(r["bucket"], float(r[key] or 0)) for r in rows]


templates.env.filters.update(dt=_dt, num=_num, pct=_pct, dur=_dur, series=_series)
templates.env.globals.update(
    version=__version__,
    line_chart=charts.line_chart,
    bar_chart=charts.bar_chart,
    long_gone_days=views.LONG_GONE_DAYS,
)


def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)
