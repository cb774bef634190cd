"""Webhook delivery: one signed HTTP POST of JSON per message; SMS and chat gateways are webhooks too.

Each request carries ``Idempotency-Key`` (receivers drop duplicates by it) and
``X-Forewarn-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with settings.webhook.secret>``.
Outcomes: 2xx sent; 408, 429 and 5xx, timeouts and connection errors are retried (a ``Retry-After`` in seconds
is honoured); any other status (4xx, unexpected 3xx) is permanent and the message is dead-lettered.

Connections are kept alive and reused, one per sending thread and origin, through the small HTTP/1.1 client
in :mod:`forewarn.deliver.channels.http1` (one send per request) rather than httpx: on our 2-core machine
httpx tops out near 1,600 POST/s against a local receiver, and the delivery target is 5,000 messages/s.

Where a message goes: ``webhook`` posts to the message's address when that is an http(s) URL, else to
``settings.webhook.url``; ``sms`` and ``chat`` post to ``settings.webhook.gateways["sms" | "chat"]`` with the
phone number / chat id in ``to``.

>>> body = b'{"id": "k1"}'
>>> sig = sign(body, "s3cret")
>>> sig.startswith("sha256="), verify(body, "s3cret", sig), verify(body, "other", sig)
(True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from forewarn.deliver.channels.base import CustomerView, Delivery, PooledChannel, SendResult
from forewarn.deliver.channels.http1 import HttpConnection

RETRYABLE_4XX = {408, 429}


def sign(body: bytes, secret: str) -> str:
    """The signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the valid signature of ``body`` (constant-time comparison)."""
    return bool(header) and hmac.compare_digest(sign(body, secret), header or "")


def payload_for(delivery: Delivery) -> dict[str, Any]:
    """The JSON document posted for one message."""
    doc: dict[str, Any] = {
        "id": delivery.idempotency_key,
        "channel": delivery.channel,
        "to": delivery.address,
        "customer_id": delivery.customer_id,
        "topic": delivery.topic,
        "thread": delivery.thread_key,
        "priority": delivery.priority,
        "subject": delivery.subject,
        "body": delivery.body,
        "attempt": delivery.attempt,
    }
    if delivery.incident_id is not None:
        doc["incident_id"] = delivery.incident_id
    if delivery.data:
        doc["data"] = delivery.data
    return doc


class WebhookChannel(PooledChannel):
    """HTTP POST JSON to a URL, signed, over kept-alive connections."""

    requires_address = False

    def __init__(
        self,
        name: str = "webhook",
        url: str | None = None,
        secret: str = "change-me",
        timeout_s: float = 5.0,
        concurrency: int = 1,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "forewarn-webhook/0.1",
    ) -> None:
        super().__init__(concurrency)
        self.name = name
        self.url = url
        self.secret = secret.encode()
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.user_agent = user_agent
        # gateways need an address (phone, chat id); a plain webhook may go to the configured URL
        self.requires_address = name in ("sms", "chat")

    @classmethod
    def from_settings(cls, settings: Any, name: str = "webhook", **options: Any) -> WebhookChannel:
        hook = settings.webhook
        url = hook.url if name == "webhook" else (getattr(hook, "gateways", None) or {}).get(name)
        options.setdefault("url", url)
        options.setdefault("secret", hook.secret)
        options.setdefault("timeout_s", hook.timeout_s)
        return cls(name=name, **options)

    def address_for(self, customer: CustomerView) -> str | None:
        if self.name == "sms":
            return customer.phone
        if self.name == "chat":
            return str(customer.attributes.get("chat_id") or customer.id)
        return customer.attributes.get("webhook_url") or None

    def target(self, delivery: Delivery) -> str | None:
        if (
            self.name == "webhook"
            and delivery.address
            and delivery.address.startswith(("http://", "https://"))
        ):
            return delivery.address
        return self.url

    def _conn(self, url: str) -> tuple[HttpConnection, str]:
        """The calling thread's connection to ``url``'s origin, and the request path."""
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname, parts.port)
        conns: dict[Any, HttpConnection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = conns.get(origin)
        if conn is None:
            conn = HttpConnection(
                parts.scheme, parts.hostname or "", parts.port, self.timeout_s, self.ssl_context
            )
            conns[origin] = self._track(conn)
        return conn, path

    def send(self, delivery: Delivery) -> SendResult:
        url = self.target(delivery)
        if not url:
            where = (
                "settings.webhook.url"
                if self.name == "webhook"
                else f"settings.webhook.gateways[{self.name!r}]"
            )
            return SendResult(
                delivery.id, ok=False, permanent=True, error=f"no URL for {self.name}: set {where}"
            )
        body = json.dumps(payload_for(delivery), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.idempotency_key,
            "X-Forewarn-Signature": "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest(),
            "X-Forewarn-Channel": self.name,
            "User-Agent": self.user_agent,
        }
        try:
            conn, path = self._conn(url)
        except ValueError as exc:
            return SendResult(delivery.id, ok=False, permanent=True, error=f"webhook URL {url!r}: {exc}")
        for _try in range(2):
            reused = conn.reused
            try:
                status, resp_headers, text = conn.post(path, body, headers)
                return self._outcome(delivery, status, resp_headers.get("retry-after"), text)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
                conn.close()
                if reused:
                    continue  # a kept-alive connection the receiver had closed: one fresh try
                return SendResult(delivery.id, ok=False, error=f"{type(exc).__name__}: {exc}")
            except (TimeoutError, OSError, ValueError) as exc:
                conn.close()
                return SendResult(delivery.id, ok=False, error=f"{type(exc).__name__}: {exc}")
        return SendResult(delivery.id, ok=False, error="connection closed by receiver")

    @staticmethod
    def _outcome(delivery: Delivery, status: int, retry_after: str | None, text: bytes) -> SendResult:
        if 200 <= status < 300:
            return SendResult(delivery.id, ok=True)
        snippet = text[:200].decode("utf-8", "replace").strip()
        error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        if status >= 500 or status in RETRYABLE_4XX:
            after = None
            if retry_after and retry_after.strip().isdigit():
                after = float(retry_after.strip())
            return SendResult(delivery.id, ok=False, error=error, retry_after=after)
        return SendResult(delivery.id, ok=False, permanent=True, error=error)
