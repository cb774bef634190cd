"""API tokens for tests of the API that are not about who may call it (see ``tests/test_auth.py`` for those)."""

from __future__ import annotations

from forewarn.context import Context
from forewarn.state import tokens
from forewarn.state.db import transaction


def admin_headers(ctx: Context) -> dict[str, str]:
    """The ``Authorization`` header of a new ``admin`` API token on ``ctx``'s store."""
    with transaction(ctx.engine) as s:
        _, token = tokens.create(s, "tests", ["admin"], actor="cli:tests")
    return {"Authorization": f"Bearer {token}"}
