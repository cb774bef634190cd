"""The FastAPI application: the REST API under ``/v1``, the status page, ``/metrics`` and the dashboard."""

from __future__ import annotations

from fastapi import FastAPI

from forewarn import __version__
from forewarn.api import alertmanager, customers, incidents, metrics, signals, status, unsubscribe
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
    app = FastAPI(title="forewarn", version=__version__)
    app.state.ctx = ctx or Context()
    for module in (signals, customers, incidents, alertmanager, status, metrics, unsubscribe):
        app.include_router(module.router)
    # after the API, so its pages never shadow an API route; every page needs a signed-in user
    app.include_router(login.router)
    app.include_router(dashboard.public)
    app.include_router(dashboard.router)
    app.add_exception_handler(auth.LoginRequired, auth.login_redirect)
    app.add_middleware(auth.SessionCookieMiddleware)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
