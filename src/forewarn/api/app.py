"""The FastAPI application: the REST API under ``/v1``, the status page, ``/metrics`` and the dashboard."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from forewarn import __version__
from forewarn.api import (
    alertmanager,
    audit,
    customers,
    docs,
    incidents,
    metrics,
    signals,
    status,
    tickets,
    unsubscribe,
)
from forewarn.api.auth import PUBLIC, PUBLIC_SCOPE, api_routes, declared_scope
from forewarn.api.errors import ERROR_BODY, Error
from forewarn.api.limits import BodyLimits
from forewarn.context import Context
from forewarn.privacy import logs
from forewarn.web import auth, login
from forewarn.web import routes as dashboard


def create_app(ctx: Context | None = None) -> FastAPI:
    """Build the app on ``ctx`` (default: settings from the environment).

    >>> app = create_app(Context())
    >>> app.title
    'forewarn'
    """
    logs.install()  # no email address or phone number in any log line or traceback of the server
    app = FastAPI(title="forewarn", version=__version__, docs_url=None)  # /docs: served offline (api.docs)
    app.state.ctx = ctx = ctx or Context()
    for module in (
        signals,
        customers,
        incidents,
        alertmanager,
        status,
        metrics,
        tickets,
        unsubscribe,
        audit,
        docs,
    ):
        app.include_router(module.router)
    # after the API, so its pages never shadow an API route; every page needs a signed-in user
    app.include_router(login.router)
    app.include_router(dashboard.public)
    app.include_router(dashboard.router)
    app.add_exception_handler(auth.LoginRequired, auth.login_redirect)
    app.add_middleware(auth.SessionCookieMiddleware)

    @app.get("/healthz", tags=["ops"], dependencies=[PUBLIC])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    limits = ctx.settings.api
    app.add_middleware(BodyLimits, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.openapi = lambda: _openapi_with_scopes(app)  # type: ignore[method-assign]
    return app


SCOPED_ERRORS = {
    "401": "no API token, or an unknown, revoked or expired one",
    "403": "the token lacks the scope this operation declares (x-scope)",
    "429": "the token is over its rate limit (see Retry-After)",
}
BODY_ERRORS = {
    "408": "no part of the request body arrived in time",
    "413": "the request body is over the limit",
}


def _openapi_with_scopes(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, each operation with ``x-scope`` (the scope its route declares, or ``public``) and the
    errors that authentication and the body limits add."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = Error.model_json_schema()
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            scope = declared_scope(route)
            for method in route.methods:
                operation = schema["paths"][route.path_format].get(method.lower())
                if operation is None or scope is None:
                    continue
                operation["x-scope"] = scope
                errors = {**(SCOPED_ERRORS if scope != PUBLIC_SCOPE else {}), **BODY_ERRORS}
                if "requestBody" in operation:
                    errors["400"] = "the body cannot be parsed (not JSON, or not UTF-8)"
                for code, description in errors.items():
                    operation["responses"].setdefault(
                        code, {"description": description, "content": ERROR_BODY}
                    )
        app.openapi_schema = schema
    return app.openapi_schema
