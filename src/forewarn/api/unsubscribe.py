"""The unsubscribe page: ``GET /u/{token}`` shows what the link stops, ``POST /u/{token}`` records it at once.

POST works without a form body too, so mail clients' one-click unsubscribe (RFC 8058,
``List-Unsubscribe-Post``) can use the same URL.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse

from forewarn.api.auth import PUBLIC
from forewarn.api.deps import get_ctx
from forewarn.context import Context
from forewarn.decide.unsubscribe import BadToken, Unsubscribe, record, verify
from forewarn.state.db import transaction

router = APIRouter(tags=["unsubscribe"], dependencies=[PUBLIC])  # signed links: no login

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}}
button{{font:inherit;padding:.5rem 1rem;margin:.25rem 0;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""

# the answers to a bad link are pages for people, not JSON
LINK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "the link is malformed or its signature does not match",
        "content": {"text/html": {}},
    },
    404: {"description": "the link's customer is no longer known", "content": {"text/html": {}}},
}

_CHANNEL = {"email": "email", "sms": "text message", "chat": "chat message"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


def _what(u: Unsubscribe) -> str:
    channel = _CHANNEL.get(u.channel, u.channel)
    topic = "all" if u.topic == "*" else f"<strong>{escape(u.topic)}</strong>"
    return f"{topic} messages by {escape(channel)}"


def _bad(e: BadToken) -> HTMLResponse:
    return _page("This link does not work", f"<p>{escape(str(e))}</p>", 400)


@router.get("/u/{token}", response_class=HTMLResponse, responses=LINK_ERRORS)
def show(token: str, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    try:
        u = verify(ctx.secrets.links.accepted(), token)
    except BadToken as e:
        return _bad(e)
    form = (
        f'<p>Stop receiving {_what(u)} from us?</p><form method="post">'
        '<button type="submit" name="scope" value="topic">Unsubscribe</button><br>'
        f'<button type="submit" name="scope" value="all">Stop all messages by {escape(u.channel)}</button>'
        "</form>"
    )
    return _page("Unsubscribe", form)


@router.post("/u/{token}", response_class=HTMLResponse, responses=LINK_ERRORS)
def unsubscribe(token: str, scope: str = Form("topic"), ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    try:
        u = verify(ctx.secrets.links.accepted(), token)
    except BadToken as e:
        return _bad(e)
    everything = scope == "all"
    with transaction(ctx.engine) as session:
        known = record(session, u, everything=everything)
    if not known:
        return _page("This link does not work", "<p>We do not know this customer any more.</p>", 404)
    shown = Unsubscribe(u.customer_id, u.channel, "*") if everything else u
    return _page("You are unsubscribed", f"<p>You will not receive {_what(shown)} from us any more.</p>")
