"""What every delivery channel is: a name, how it finds a customer's address, and how it sends a batch.

Channels are looked up by short name (``email``, ``sms``, ``chat``, ``webhook``, ``console``, ``file``),
the way storage backends are named in config; a plug-in adds its own with :func:`register_channel`. A channel
is declared there once (:class:`ChannelSpec`: name, address field, consent, templates, topics), and playbooks,
guardrails, incident notices, the renderer and the worker all read that declaration.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel, declared once: everything the rest of forewarn needs to know about it.

    Playbooks may name it, the guardrails and the incident notices know which customer field holds its
    address and whether consent applies, the renderer knows its templates, and the worker builds it: all
    from this one declaration (:func:`register_channel`), so a plug-in channel works everywhere.
    """

    name: str
    factory: ChannelFactory
    # the customer field holding its address ("email", "phone"); None: it needs none stored on the customer
    address_field: str | None = None
    # a message to a person: consent per channel and topic applies (the one rule in forewarn.deliver.consent)
    needs_consent: bool = True
    # its templates: ``<name>.<template>.j2`` before ``<name>.j2`` (default: the channel's own name)
    template: str = ""
    # the topics it may carry; None: any
    topics: frozenset[str] | None = None
    # its factory takes ``concurrency=`` (a pool of connections)
    concurrent: bool = False
    # its requests carry X-Forewarn-Signature: its factory takes ``secret=`` (the signing secret in force)
    signed: bool = False

    @property
    def template_variant(self) -> str:
        return self.template or self.name

    def carries(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics

    def build(self, settings: Any, concurrency: int = 1, **options: Any) -> Channel:
        if self.concurrent:
            options.setdefault("concurrency", concurrency)
        return self.factory(settings=settings, **options)


_REGISTRY: dict[str, ChannelSpec] = {}
# the customer columns an address can come from (the incident notices read them in SQL); None: none needed
ADDRESS_FIELDS: tuple[str | None, ...] = ("email", "phone", None)


def register_channel(
    name: str,
    factory: ChannelFactory,
    *,
    address_field: str | None = None,
    needs_consent: bool = True,
    template: str = "",
    topics: Iterable[str] | None = None,
    concurrent: bool = False,
    signed: bool = False,
) -> ChannelSpec:
    """Declare a channel by short name; ``factory(settings=..., **options)`` builds it. Returns its spec.

    >>> from forewarn.deliver.channels.console import ConsoleChannel
    >>> spec = register_channel("pager", lambda settings, **kw: ConsoleChannel(**kw), template="sms",
    ...                         topics=["outage"])
    >>> spec.template_variant, spec.carries("outage"), spec.carries("offer"), "pager" in available_channels()
    ('sms', True, False, True)
    >>> unregister_channel("pager")
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"channel name: expected letters, digits, '-' or '_', got {name!r}")
    if address_field not in ADDRESS_FIELDS:
        raise ValueError(
            f"channel {name!r}: address_field: expected one of {ADDRESS_FIELDS}, got {address_field!r}"
        )
    _builtin()
    spec = ChannelSpec(
        name,
        factory,
        address_field=address_field,
        needs_consent=needs_consent,
        template=template,
        topics=None if topics is None else frozenset(topics),
        concurrent=concurrent,
        signed=signed,
    )
    _REGISTRY[name] = spec
    return spec


def unregister_channel(name: str) -> None:
    """Forget a plug-in channel (tests); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def channel_specs() -> dict[str, ChannelSpec]:
    """Every declared channel by name, built-in ones first."""
    _builtin()
    return dict(_REGISTRY)


def channel_spec(name: str) -> ChannelSpec | None:
    """The declaration of channel ``name``, or None when no channel has that name."""
    _builtin()
    return _REGISTRY.get(name)


def addresses_of(customer: Any) -> dict[str, str | None]:
    """The declared channels a customer (a record or a mapping) can be reached on -> their address there
    (None when the channel needs none stored on the customer); a channel whose address field is empty is left
    out.

    >>> sorted(addresses_of({"email": "a@example.com", "phone": None}).items())[:3]
    [('chat', None), ('console', None), ('email', 'a@example.com')]
    """
    get = customer.get if isinstance(customer, Mapping) else lambda name: getattr(customer, name, None)
    out: dict[str, str | None] = {}
    for spec in channel_specs().values():
        if spec.address_field is None:
            out[spec.name] = None
        elif value := get(spec.address_field):
            out[spec.name] = value
    return out


def available_channels() -> list[str]:
    _builtin()
    return list(_REGISTRY)


def create_channel(name: str, settings: Any = None, **options: Any) -> Channel:
    """Build the channel registered as ``name`` (``settings`` defaults to the process settings)."""
    spec = channel_spec(name)
    if spec is None:
        raise ValueError(f"unknown channel {name!r}; expected one of {sorted(_REGISTRY)}")
    if settings is None:
        from forewarn.config import get_settings

        settings = get_settings()
    return spec.factory(settings=settings, **options)


def _builtin() -> None:
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED.append(True)
    from forewarn.deliver.channels import console, smtp, webhook

    def gateway(name: str) -> ChannelFactory:
        return lambda settings, **kw: webhook.WebhookChannel.from_settings(settings, name, **kw)

    # (a plug-in registering first triggers this, so built-in channels come first and a plug-in may replace one)
    register_channel("email", smtp.SmtpChannel.from_settings, address_field="email", concurrent=True)
    register_channel("sms", gateway("sms"), address_field="phone", concurrent=True, signed=True)
    register_channel("chat", gateway("chat"), concurrent=True, signed=True)
    register_channel("webhook", gateway("webhook"), concurrent=True, signed=True)
    register_channel("console", console.ConsoleChannel.from_settings)
    register_channel("file", console.FileChannel.from_settings)


_BUILTIN_LOADED: list[bool] = []
