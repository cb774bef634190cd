"""Who may call which route: every route declares, in one place, the scope it needs or that it is public.

A route declares its access with a dependency, either ``caller: Caller = requires("incidents:write")`` (a bearer
token with that scope, or ``admin``) or ``dependencies=[PUBLIC]`` (anyone: the status page, unsubscribe links).
``tests/test_auth.py`` walks the OpenAPI schema and fails for a route that declares neither.

A request with a token (``Authorization: Bearer fw_...``) gets, in this order: 401 when the token is missing,
unknown, revoked or expired; 403 when it lacks the scope; 429 (with ``Retry-After``) when the token is over its
rate limit. Checked tokens are kept in memory for ``settings.api.token_cache_s`` (so a revocation, made with the
command line, takes effect within that time; :meth:`TokenChecker.forget` at once), and a token's last-used time
is written at most every ``settings.api.last_used_every_s``: at 50 requests a second neither costs a query.

>>> from fastapi import APIRouter
>>> router = APIRouter()
>>> @router.get("/v1/things")
... def things(caller: Caller = requires("incidents:read")) -> list[str]:
...     return []
>>> declared_scope(router.routes[0])
'incidents:read'
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fastapi.routing
from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from forewarn.deliver.ratelimit import TokenBucket
from forewarn.state import tokens
from forewarn.state.db import transaction
from forewarn.state.models import utcnow

PUBLIC_SCOPE = "public"

_bearer = HTTPBearer(
    auto_error=False,
    description="an API token made with `forewarn tokens create` (fw_...), with the scope the route names",
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``actor`` as the audit log names it (``token:<id>``, or ``public``) and from where."""

    actor: str
    ip: str | None
    token_id: int | None = None
    scopes: frozenset[str] = frozenset()


@dataclass
class _Known:
    """A checked token, as this process remembers it."""

    id: int
    scopes: frozenset[str]
    expires_at: datetime | None
    bucket: TokenBucket | None
    read_at: float
    written_at: float  # when this process last wrote its last-used time


class TokenChecker:
    """Checks tokens against the store for one app: a short cache, per-token rate limits, last-used times."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.limits = ctx.settings.api
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop every cached token (after revoking one in this process)."""
        with self._lock:
            self._known.clear()

    def check(self, token: str) -> _Known | None:
        """The live token ``token`` is, or ``None``."""
        now = time.monotonic()
        digest = tokens.hash_token(token)
        with self._lock:
            known = self._known.get(digest)
        if known is None or now - known.read_at > self.limits.token_cache_s:
            with transaction(self.ctx.engine) as s:
                row = tokens.find(s, token)
                if row is None:
                    with self._lock:
                        self._known.pop(digest, None)
                    return None
                rate = self.limits.rate_limit if row.rate_limit is None else row.rate_limit
                bucket = known.bucket if known is not None else None  # a re-read keeps what was spent
                if rate and (bucket is None or bucket.rate != rate):
                    bucket = TokenBucket(rate, max(self.limits.rate_burst, rate))
                known = _Known(
                    row.id,
                    frozenset(row.scopes),
                    row.expires_at,
                    bucket if rate else None,
                    now,
                    known.written_at if known is not None else -math.inf,
                )
            with self._lock:
                self._known[digest] = known
        if known.expires_at is not None and known.expires_at <= utcnow():
            return None
        return known

    def touch(self, known: _Known) -> None:
        """Record that ``known`` was used now, unless this process did so less than a while ago."""
        now = time.monotonic()
        if now - known.written_at < self.limits.last_used_every_s:
            return
        known.written_at = now
        with transaction(self.ctx.engine) as s:
            tokens.mark_used(s, known.id, utcnow())


def checker(request: Request) -> TokenChecker:
    state = request.app.state
    if getattr(state, "token_checker", None) is None:
        state.token_checker = TokenChecker(state.ctx)
    return state.token_checker


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class _Scoped:
    """The dependency ``requires(scope)`` puts on a route."""

    def __init__(self, scope: str) -> None:
        if scope not in tokens.SCOPES:
            raise ValueError(f"unknown scope {scope!r}; declare it in forewarn.state.tokens.SCOPES")
        self.scope = scope

    def __call__(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Caller:
        if credentials is None:
            raise HTTPException(
                401,
                "missing API token: send 'Authorization: Bearer fw_...' (make one with `forewarn tokens create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        check = checker(request)
        known = check.check(credentials.credentials)
        if known is None:
            raise HTTPException(
                401,
                "unknown, revoked or expired API token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not tokens.allows(known.scopes, self.scope):
            raise HTTPException(
                403,
                f"this token lacks the scope {self.scope!r} (it has: {', '.join(sorted(known.scopes))})",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope" scope="{self.scope}"'},
            )
        if known.bucket is not None:
            wait = known.bucket.take()
            if wait:
                raise HTTPException(
                    429,
                    f"rate limit of {known.bucket.rate:g} requests/s for this token exceeded; "
                    f"retry after {wait:.2f} s",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        check.touch(known)
        return Caller(f"token:{known.id}", client_ip(request), known.id, known.scopes)


class _Public:
    """The dependency ``PUBLIC`` puts on a route anyone may call."""

    scope = PUBLIC_SCOPE

    def __call__(self, request: Request) -> Caller:
        return Caller(PUBLIC_SCOPE, client_ip(request))


_SCOPED: dict[str, _Scoped] = {}


def requires(scope: str) -> Any:
    """The dependency of a route that needs a token with ``scope`` (one of ``forewarn.state.tokens.SCOPES``);
    it gives the route the :class:`Caller`."""
    if scope not in _SCOPED:
        _SCOPED[scope] = _Scoped(scope)
    return Depends(_SCOPED[scope])


PUBLIC: Any = Depends(_Public())


def api_routes(app: Any) -> Iterator[Any]:
    """Every API route of ``app`` as served: with the dependencies of the routers that include it."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.165 keeps routers nested
    for route in contexts(app.routes) if contexts else app.routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def declared_scope(route: Any) -> str | None:
    """The scope an API route declares (``"public"`` for a public route), or ``None`` when it declares none."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, _Scoped | _Public):
            return dep.call.scope
        stack.extend(dep.dependencies)
    return None
