"""How a request finds the running forewarn context: one definition for the dashboard and the API.

It lives with the dashboard because the API imports the dashboard (it mounts its pages and serves their data
as JSON), never the other way round.
"""

from fastapi import Request

from forewarn.context import Context


def get_ctx(request: Request) -> Context:
    return request.app.state.ctx
