"""The API's errors, in one shape: ``{"detail": "..."}``, except 422, whose ``detail`` is FastAPI's list of
``{"loc", "msg", "type"}`` (so that a client parses every 422 the same way, whoever raised it).

Routes declare the errors they raise with ``responses=errors(404, 409)``; authentication and the body limits
add theirs to every operation (``forewarn.api.app``).

>>> sorted(errors(404))
[404]
>>> try:
...     raise unprocessable("status 'x' is not one of open, resolved", "query", "status")
... except Exception as e:
...     e.detail[0]["loc"], e.status_code
(['query', 'status'], 422)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Path
from pydantic import BaseModel, Field

WHAT = {
    400: "the request cannot be understood (a parameter out of its range or format)",
    404: "no such resource",
    409: "the resource's state does not allow this (e.g. updating a resolved incident)",
    503: "a store is not available now (e.g. another process holds the signal store); try again",
}


class Error(BaseModel):
    detail: str = Field(description="what is wrong and what was expected")


ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

# the largest id a path or query may name: the id columns are 32-bit integers on PostgreSQL
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that raises these status codes (each a JSON :class:`Error`, also on a
    route whose success is a page)."""
    return {code: {"description": WHAT[code], "content": ERROR_BODY} for code in codes}


def unprocessable(msg: str, *loc: str | int) -> HTTPException:
    """A 422 in FastAPI's validation shape, for a problem found after the request was parsed."""
    return HTTPException(422, [{"loc": list(loc) or ["body"], "msg": msg, "type": "value_error"}])
