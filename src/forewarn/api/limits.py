"""Request limits every route gets: the largest body (413) and how long a client may stall sending it (408).

A plain ASGI middleware, so the request's messages pass through untouched (no buffering, no extra task): a
declared ``Content-Length`` over the limit is refused before any of the body is read, and a chunked body is
counted as it arrives. Errors are JSON like every other API error: ``{"detail": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import HTTPException

Message = dict[str, Any]


async def _send_error(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """Refuse bodies over ``max_bytes`` (413) and clients that send nothing for ``timeout_s`` mid-body (408)."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    def _too_large(self) -> str:
        return f"request body over the limit of {self.max_bytes:,} bytes (settings.api.max_body_bytes)"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await _send_error(send, 400, "Content-Length is not a number")
                    return
                if int(value) > self.max_bytes:
                    await _send_error(send, 413, self._too_large())
                    return
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, the app may wait for the disconnect as long as it likes
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_s):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, f"no part of the request body arrived for {self.timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)
