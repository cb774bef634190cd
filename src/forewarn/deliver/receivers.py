"""Local receivers for development, tests, benchmarks and the demo: a webhook endpoint and an SMTP server.

``WebhookReceiver`` is a small HTTP/1.1 server (asyncio, keep-alive) on loopback that records every POST
(path, headers, body) and answers with a programmable status; ``SmtpReceiver`` wraps aiosmtpd's ``Controller``
(it cannot bind port 0, so a free port is picked first) and records every message. Both run in a background
thread of the calling process; ``python -m forewarn.deliver.receivers webhook --port 8025`` runs one alone.

>>> import http.client, json
>>> with WebhookReceiver() as rx:
...     c = http.client.HTTPConnection("127.0.0.1", rx.port)
...     c.request("POST", "/hook", body=b'{"a": 1}', headers={"Idempotency-Key": "k1"})
...     c.getresponse().status
200
>>> rx.keys(), rx.received[0].json()
(['k1'], {'a': 1})
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    410: "Gone",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, rx: WebhookReceiver) -> None:
        self.rx = rx
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            status = self.rx.handle(Received(method, path, headers, body))
            reply = b"ok" if 200 <= status < 300 else b"error"
            assert self.transport is not None
            self.transport.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Length: {len(reply)}\r\n"
                f"Content-Type: text/plain\r\n\r\n".encode()
                + reply
            )


class WebhookReceiver:
    """A recording HTTP endpoint on loopback. ``status`` is a fixed code or ``f(received) -> code``.

    ``record`` False keeps only the idempotency keys (large benchmarks); ``delay_s`` slows each answer.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        status: int | Callable[[Received], int] = 200,
        record: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.status = status
        self.record = record
        self.received: list[Received] = []
        self._keys: list[str | None] = []
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def handle(self, req: Received) -> int:
        status = self.status(req) if callable(self.status) else self.status
        self.count += 1
        if self.record:
            self.received.append(req)
        else:
            self._keys.append(req.headers.get("idempotency-key"))
        return status

    def keys(self) -> list[str | None]:
        """Idempotency keys of every request, in arrival order (duplicates included)."""
        if self.record:
            return [r.key for r in self.received]
        return list(self._keys)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._server = await loop.create_server(lambda: _HttpProtocol(self), self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(start())
        loop.run_forever()
        assert self._server is not None
        self._server.close()
        loop.run_until_complete(self._server.wait_closed())
        loop.close()

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._run, name="webhook-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(slots=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    at: float = field(default_factory=time.monotonic)

    def message(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)  # type: ignore[return-value]


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on loopback that records messages; optional AUTH and STARTTLS.

    ``reply`` is ``None`` (accept) or ``f(mail) -> "250 OK" | "550 ..." | "451 ..."``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        record: bool = True,
        reply: Callable[[Mail], str] | None = None,
        auth: tuple[str, str] | None = None,
        tls_context: Any = None,
    ) -> None:
        from aiosmtpd.controller import Controller

        self.host, self.port = host, port or free_port(host)
        self.record = record
        self.reply = reply
        self.messages: list[Mail] = []
        self.count = 0
        self.sessions = 0
        rx = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mail = Mail(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                )
                answer = rx.reply(mail) if rx.reply else "250 OK"
                if answer.startswith("250"):
                    rx.count += 1
                    if rx.record:
                        rx.messages.append(mail)
                return answer

            async def handle_EHLO(
                self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
            ) -> list[str]:
                rx.sessions += 1
                session.host_name = hostname
                return responses

        kwargs: dict[str, Any] = {}
        if auth is not None:
            user, password = auth

            def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
                from aiosmtpd.smtp import AuthResult, LoginPassword

                ok = (
                    isinstance(data, LoginPassword)
                    and data.login.decode() == user
                    and data.password.decode() == password
                )
                return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

            kwargs.update(authenticator=authenticator, auth_require_tls=tls_context is not None)
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        self.controller = Controller(Handler(), hostname=host, port=self.port, **kwargs)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run a receiver until interrupted, printing a count every second (or once, with ``--quiet``)."""
    p = argparse.ArgumentParser(prog="python -m forewarn.deliver.receivers", description=main.__doc__)
    p.add_argument("kind", choices=["webhook", "smtp"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--status", type=int, default=200, help="HTTP status to answer (webhook)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.kind == "webhook":
        rx: Any = WebhookReceiver(args.host, args.port, status=args.status, record=False).start()
        print(f"webhook receiver at {rx.url}", flush=True)
    else:
        rx = SmtpReceiver(args.host, args.port or None, record=False).start()
        print(f"smtp receiver at {args.host}:{rx.port}", flush=True)
    try:
        last = -1
        while True:
            time.sleep(1)
            if not args.quiet and rx.count != last:
                last = rx.count
                print(f"received {rx.count}", flush=True)
    except KeyboardInterrupt:
        rx.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
