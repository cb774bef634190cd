"""Who is using the dashboard: sessions, roles and CSRF protection for every dashboard route.

A person signs in at ``/login`` (a local user, :mod:`forewarn.state.users`) or arrives through a reverse proxy
that names them in ``settings.auth.trusted_header`` (believed only from ``settings.auth.trusted_proxies``).
Either way they get a server-side session whose random token is the ``forewarn_session`` cookie (HttpOnly,
SameSite=Lax, Secure over https or when configured).

Every request that changes something (any method but GET/HEAD/OPTIONS) must carry the session's CSRF token:
forms in a hidden ``csrf_token`` field, htmx in the ``X-CSRF-Token`` header (``hx-headers`` on ``<body>``).
The token is an HMAC of the session token, so another site can neither read nor guess it.

>>> csrf_for("a-session-token") == csrf_for("a-session-token") != csrf_for("another")
True
>>> safe_next("//evil.example/"), safe_next("/outbox?status=dead")
('/', '/outbox?status=dead')
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from forewarn.context import Context
from forewarn.state import users
from forewarn.web.deps import get_ctx

SESSION_COOKIE = "forewarn_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SET_COOKIES = "forewarn_set_cookies"  # request.state key: cookies the middleware adds to the response


def csrf_for(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"forewarn-csrf", hashlib.sha256).hexdigest()


def safe_next(target: str | None) -> str:
    """A local path to go back to after signing in; anything else (another site) becomes ``/``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def from_trusted_proxy(request: Request, ctx: Context) -> bool:
    """Whether the request came straight from one of ``settings.auth.trusted_proxies``."""
    proxies = ctx.settings.auth.trusted_proxies
    if not proxies or request.client is None:
        return False
    try:
        addr = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(addr in net for net in _networks(tuple(proxies)))


def secure_cookies(request: Request, ctx: Context) -> bool:
    configured = ctx.settings.auth.secure_cookies
    return configured if configured is not None else request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, ctx: Context, token: str) -> None:
    ttl = ctx.settings.auth.session_ttl
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()) if ttl else None,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, ctx),
        path="/",
    )


def clear_session_cookie(response: Response, request: Request, ctx: Context) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request, ctx)
    )


def session_ttl(ctx: Context) -> timedelta:
    return ctx.settings.auth.session_ttl or timedelta(hours=12)


def _proxy_user(request: Request, ctx: Context, header: str) -> tuple[users.UserInfo, str] | None:
    """The person the trusted proxy names, with a session (made on first sight; its cookie set by the
    middleware). A name the store does not know becomes a user with ``trusted_header_role``."""
    name = request.headers.get(header, "").strip()
    if not name:
        return None
    token = request.cookies.get(SESSION_COOKIE, "")
    user = users.session_user(ctx.engine, token) if token else None
    if user is not None and user.username == name:
        return user, token
    known = users.get_user(ctx.engine, name)
    if known is None:
        try:
            known = users.create_user(ctx.engine, name, ctx.settings.auth.trusted_header_role)
        except ValueError:  # made by a concurrent request meanwhile
            known = users.get_user(ctx.engine, name)
    if known is None or known.disabled:
        return None
    token = users.start_session(ctx.engine, known, session_ttl(ctx), address=client_address(request))
    request.scope.setdefault("state", {}).setdefault(_SET_COOKIES, []).append(token)
    return known, token


def resolve(request: Request, ctx: Context) -> tuple[users.UserInfo, str] | None:
    """The signed-in user and their session token, or None."""
    header = ctx.settings.auth.trusted_header
    if header and from_trusted_proxy(request, ctx):
        return _proxy_user(request, ctx, header)
    token = request.cookies.get(SESSION_COOKIE, "")
    user = users.session_user(ctx.engine, token) if token else None
    return (user, token) if user else None


class LoginRequired(Exception):
    """Raised by the dashboard's dependency; answered with a redirect to the sign-in page."""


def login_redirect(request: Request, _exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/login?next=" + quote(target, safe="")
    if request.headers.get("HX-Request"):
        # htmx would swap a followed redirect into the page; this header makes it load the sign-in page
        return Response(status_code=401, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


async def signed_in(request: Request, ctx: Context = Depends(get_ctx)) -> users.UserInfo:
    """Every dashboard route's guard: a signed-in user, and the CSRF token on anything that changes state."""
    found = resolve(request, ctx)
    if found is None:
        raise LoginRequired()
    user, token = found
    request.state.user = user
    request.state.csrf = csrf_for(token)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            sent = (await request.form()).get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(sent, request.state.csrf):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return user


def require(role: str) -> Callable[..., Awaitable[users.UserInfo]]:
    """A dependency: the signed-in user, who must have ``role`` (viewer < agent < admin), else 403."""
    users.check_role(role)

    async def dependency(user: users.UserInfo = Depends(signed_in)) -> users.UserInfo:
        if not user.may(role):
            raise HTTPException(403, f"this needs the {role} role; you are {user.role}")
        return user

    return dependency


class SessionCookieMiddleware:
    """Adds the session cookie that a dependency started (a trusted-proxy user's first request) to whatever
    response the route returns (routes return their own Response objects)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            tokens = scope.get("state", {}).get(_SET_COOKIES)
            if message["type"] == "http.response.start" and tokens:
                request = Request(scope)
                ctx: Context = scope["app"].state.ctx
                carrier = Response()
                set_session_cookie(carrier, request, ctx, tokens[-1])
                cookie = [(k, v) for k, v in carrier.raw_headers if k == b"set-cookie"]
                message = {**message, "headers": list(message.get("headers", [])) + cookie}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
