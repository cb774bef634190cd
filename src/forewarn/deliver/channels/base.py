"""What every delivery channel is: a name, how it finds a customer's address, and how it sends a batch.

Channels are looked up by short name (``email``, ``sms``, ``chat``, ``webhook``, ``console``, ``file``),
the way storage backends are named in config; a plug-in adds its own with :func:`register_channel`.

A channel reports one :class:`SendResult` per :class:`Delivery`: sent, a retryable failure, or a permanent one
(the worker dead-letters those at once). Channels never touch the database; the worker does.

>>> sorted(available_channels())
['chat', 'console', 'email', 'file', 'sms', 'webhook']
>>> ch = create_channel("console", stream=__import__("io").StringIO())
>>> ch.name
'console'
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Delivery:
    """One rendered message, ready for a channel."""

    id: int
    idempotency_key: str
    channel: str
    address: str | None
    subject: str
    body: str
    customer_id: str
    topic: str = ""
    thread_key: str = ""
    priority: str = "normal"
    attempt: int = 1
    incident_id: int | None = None
    # extra JSON-safe fields a webhook receiver may want (the producer's payload ids)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SendResult:
    """``permanent`` failures are not retried; ``retry_after`` (s) comes from the receiver."""

    id: int
    ok: bool
    permanent: bool = False
    error: str | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class CustomerView:
    """The customer fields channels and templates use (a plain row, not an ORM object: cheap in batches)."""

    id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str = "UTC"
    locale: str = "en"
    segment: str | None = None
    plan: str | None = None
    region: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class Channel(ABC):
    """A way to reach a customer. Subclasses implement :meth:`send`; :meth:`send_batch` may be overridden."""

    name: str = ""
    #: when True a message without an address (none stored, none resolvable) is suppressed, not sent
    requires_address: bool = True

    def address_for(self, customer: CustomerView) -> str | None:
        """The customer's address on this channel when the message does not name one."""
        return customer.email or customer.phone or customer.id

    @abstractmethod
    def send(self, delivery: Delivery) -> SendResult:
        """Send one message. Must not raise for delivery problems: return a failed result instead."""

    def send_batch(self, deliveries: Sequence[Delivery]) -> list[SendResult]:
        """Send several; the default sends them one after the other, isolating errors per message."""
        return [self._safe_send(d) for d in deliveries]

    def _safe_send(self, delivery: Delivery) -> SendResult:
        try:
            return self.send(delivery)
        except Exception as exc:  # a bug in one send must not lose the batch's other outcomes
            return SendResult(delivery.id, ok=False, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:  # noqa: B027 - optional hook, most channels hold nothing
        """Release connections."""


class PooledChannel(Channel):
    """A channel that sends a batch over ``concurrency`` threads, each keeping its own open connection.

    Threads help because sending is mostly waiting on the network; each thread's connection is reused across
    batches (``threading.local``) and closed by :meth:`close`.
    """

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = max(1, int(concurrency))
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()

    def _track(self, conn: Any) -> Any:
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _untrack(self, conn: Any) -> None:
        with self._conns_lock, suppress(ValueError):
            self._conns.remove(conn)

    def send_batch(self, deliveries: Sequence[Delivery]) -> list[SendResult]:
        if self.concurrency == 1 or len(deliveries) < 2:
            return [self._safe_send(d) for d in deliveries]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"fw-{self.name}")
        # contiguous chunks, one per thread: fewer task hand-offs than one task per message
        n = min(self.concurrency, len(deliveries))
        chunks = [deliveries[i::n] for i in range(n)]
        futures = [self._pool.submit(lambda c: [self._safe_send(d) for d in c], chunk) for chunk in chunks]
        by_id: dict[int, SendResult] = {}
        for fut in futures:
            for r in fut.result():
                by_id[r.id] = r
        return [by_id[d.id] for d in deliveries]

    def _close_conn(self, conn: Any) -> None:
        close = getattr(conn, "close", None)
        if close:
            close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(Exception):
                self._close_conn(conn)
        self._local = threading.local()


ChannelFactory = Callable[..., Channel]
_REGISTRY: dict[str, ChannelFactory] = {}


def register_channel(name: str, factory: ChannelFactory) -> None:
    """Make a channel available by short name; ``factory(settings=None, **options)`` builds it."""
    _REGISTRY[name] = factory


def available_channels() -> list[str]:
    _builtin()
    return list(_REGISTRY)


def create_channel(name: str, settings: Any = None, **options: Any) -> Channel:
    """Build the channel registered as ``name`` (``settings`` defaults to the process settings)."""
    _builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown channel {name!r}; expected one of {sorted(_REGISTRY)}") from None
    if settings is None:
        from forewarn.config import get_settings

        settings = get_settings()
    return factory(settings=settings, **options)


def _builtin() -> None:
    if "console" in _REGISTRY:
        return
    from forewarn.deliver.channels import console, smtp, webhook

    register_channel("email", smtp.SmtpChannel.from_settings)
    register_channel(
        "webhook", lambda settings, **kw: webhook.WebhookChannel.from_settings(settings, "webhook", **kw)
    )
    register_channel(
        "sms", lambda settings, **kw: webhook.WebhookChannel.from_settings(settings, "sms", **kw)
    )
    register_channel(
        "chat", lambda settings, **kw: webhook.WebhookChannel.from_settings(settings, "chat", **kw)
    )
    register_channel("console", console.ConsoleChannel.from_settings)
    register_channel("file", console.FileChannel.from_settings)
