"""Shared FastAPI dependencies (the one ``get_ctx`` is the dashboard's: see ``forewarn.web.deps``)."""

from forewarn.web.deps import get_ctx

__all__ = ["get_ctx"]
