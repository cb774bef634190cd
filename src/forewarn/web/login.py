"""Signing in and out of the dashboard, and the admins' user page.

``/login`` is public; its form carries a one-time CSRF value that must match a cookie set with the form
(another site can post a form but cannot read or set that cookie). Failed sign-ins are rate-limited per name
and per address (429 with ``Retry-After``). ``/logout`` ends the session on the server.

>>> sorted(r.path for r in router.routes)
['/login', '/login', '/logout', '/users', '/users', '/users/{username}/disable']
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from forewarn.context import Context
from forewarn.state import users
from forewarn.web import auth
from forewarn.web.deps import get_ctx
from forewarn.web.render import render

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "forewarn_login_csrf"


def _login_page(
    request: Request, ctx: Context, next_url: str, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    value = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {"page": "login", "next": auth.safe_next(next_url), "login_csrf": value, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=auth.secure_cookies(request, ctx),
        path="/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse, name="login_page")
def login_page(request: Request, next: str = "/", ctx: Context = Depends(get_ctx)) -> Response:
    if auth.resolve(request, ctx) is not None:
        return RedirectResponse(auth.safe_next(next), status_code=303)
    return _login_page(request, ctx, next)


@router.post("/login", name="login")
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form("/"),
    ctx: Context = Depends(get_ctx),
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token, expected):
        raise HTTPException(403, "missing or wrong CSRF token: reload the sign-in page and try again")
    a = ctx.settings.auth
    try:
        user = users.authenticate(
            ctx.engine,
            username,
            password,
            address=auth.client_address(request),
            max_per_user=a.max_failures_per_user,
            max_per_address=a.max_failures_per_address,
            window=a.failure_window or auth.session_ttl(ctx),
        )
    except users.TooManyFailures as e:
        response = _login_page(request, ctx, next, error=str(e), status_code=429)
        response.headers["Retry-After"] = str(e.retry_after)
        return response
    except users.BadCredentials as e:
        return _login_page(request, ctx, next, error=str(e), status_code=401)
    token = users.start_session(ctx.engine, user, auth.session_ttl(ctx), address=auth.client_address(request))
    response = RedirectResponse(auth.safe_next(next), status_code=303)
    auth.set_session_cookie(response, request, ctx, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", name="logout", dependencies=[Depends(auth.signed_in)])
def logout(request: Request, ctx: Context = Depends(get_ctx)) -> Response:
    users.end_session(ctx.engine, request.cookies.get(auth.SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    auth.clear_session_cookie(response, request, ctx)
    return response


# ---- the admins' user page -----------------------------------------------------------------------------


@router.get(
    "/users", response_class=HTMLResponse, name="page_users", dependencies=[Depends(auth.require("admin"))]
)
def users_page(request: Request, ctx: Context = Depends(get_ctx)) -> HTMLResponse:
    return render(
        request,
        "users.html",
        {"page": "users", "users": users.list_users(ctx.engine), "roles": users.ROLES, "error": None},
    )


@router.post("/users", name="user_create", dependencies=[Depends(auth.require("admin"))])
def user_create(
    request: Request,
    username: str = Form(""),
    role: str = Form("viewer"),
    password: str = Form(""),
    ctx: Context = Depends(get_ctx),
) -> Response:
    try:
        users.create_user(ctx.engine, username, role, password=password or None)
    except ValueError as e:
        return render(
            request,
            "users.html",
            {"page": "users", "users": users.list_users(ctx.engine), "roles": users.ROLES, "error": str(e)},
            status_code=400,
        )
    return RedirectResponse("/users", status_code=303)


@router.post("/users/{username}/disable", name="user_disable")
def user_disable(
    request: Request,
    username: str,
    admin: users.UserInfo = Depends(auth.require("admin")),
    ctx: Context = Depends(get_ctx),
) -> Response:
    if username == admin.username:
        raise HTTPException(400, "you cannot disable yourself")
    try:
        users.set_disabled(ctx.engine, username)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    return RedirectResponse("/users", status_code=303)
