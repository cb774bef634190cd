"""The FastAPI application: the REST API under ``/v1``, the status page, ``/metrics`` and the dashboard."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from forewarn import __version__
from forewarn.api import alertmanager, audit, customers, incidents, metrics, signals, status, unsubscribe
from forewarn.api.auth import PUBLIC, api_routes, declared_scope
from forewarn.api.limits import BodyLimits
from forewarn.context import Context
from forewarn.web import routes as dashboard


def create_app(ctx: Context | None = None) -> FastAPI:
    """Build the app on ``ctx`` (default: settings from the environment).

    >>> app = create_app(Context())
    >>> app.title
    'forewarn'
    """
    app = FastAPI(title="forewarn", version=__version__)
    app.state.ctx = ctx = ctx or Context()
    for module in (signals, customers, incidents, alertmanager, status, metrics, unsubscribe, audit):
        app.include_router(module.router)
    app.include_router(dashboard.router)  # after the API, so its pages never shadow an API route

    @app.get("/healthz", tags=["ops"], dependencies=[PUBLIC])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    limits = ctx.settings.api
    app.add_middleware(BodyLimits, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.openapi = lambda: _openapi_with_scopes(app)  # type: ignore[method-assign]
    return app


def _openapi_with_scopes(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, each operation with ``x-scope``: the scope its route declares (or ``public``)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for route in api_routes(app):
            if route.include_in_schema:
                scope = declared_scope(route)
                for method in route.methods:
                    operation = schema["paths"][route.path_format].get(method.lower())
                    if operation is not None and scope is not None:
                        operation["x-scope"] = scope
        app.openapi_schema = schema
    return app.openapi_schema
