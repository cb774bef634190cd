"""Shared FastAPI dependencies."""

from fastapi import Request

from forewarn.context import Context


def get_ctx(request: Request) -> Context:
    return request.app.state.ctx
