"""The FastAPI application: the REST API under ``/v1``, the status page, ``/metrics`` and the dashboard."""

from __future__ import annotations

from fastapi import FastAPI

from forewarn import __version__
from forewarn.api import alertmanager, customers, incidents, metrics, signals, status, tickets, unsubscribe
from forewarn.context import Context
from forewarn.web import routes as dashboard


def create_app(ctx: Context | None = None) -> FastAPI:
    """Build the app on ``ctx`` (default: settings from the environment).

    >>> app = create_app(Context())
    >>> app.title
    'forewarn'
    """
    app = FastAPI(title="forewarn", version=__version__)
    app.state.ctx = ctx or Context()
    for module in (signals, customers, incidents, alertmanager, status, metrics, tickets, unsubscribe):
        app.include_router(module.router)
    app.include_router(dashboard.router)  # after the API, so its pages never shadow an API route

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
