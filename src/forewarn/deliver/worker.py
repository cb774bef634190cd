"""The delivery worker: claim due outbox messages, check consent, quiet hours and rate limits, render, send,
record outcomes — a batch at a time, with a few set-based statements per batch.

Several workers may run at once (threads, processes, machines): on PostgreSQL they share the outbox through
``FOR UPDATE SKIP LOCKED`` claims; on SQLite claims serialise on the single writer. A worker killed mid-batch
loses nothing: its claimed rows are claimed again once their lease expires (:mod:`forewarn.deliver.outbox`).

Checks at send time, in this order: consent (the one rule of :mod:`forewarn.deliver.consent`, for channels
whose declaration says they message a person; a refusal suppresses the message with reason
``no consent: <channel>/<topic>``; a playbook's automation call is not asked), an address (stored on the message, else
the customer's for that channel), quiet hours in the customer's time zone (critical messages skip them when
``settings.delivery.critical_overrides_quiet_hours``), the channel's rate limit, then rendering.

>>> import tempfile, io
>>> from forewarn.config import Settings
>>> from forewarn.context import Context
>>> from forewarn.state.db import upgrade, transaction
>>> from forewarn.deliver.channels.console import ConsoleChannel
>>> home = tempfile.mkdtemp(); s = Settings(home=home); upgrade(s.database_url); ctx = Context(s)
>>> with transaction(ctx.engine) as db:
...     _ = db.execute(Customer.__table__.insert(), [{"id": "c1", "channels": [], "attributes": {}}])
...     _ = enqueue(db, [dict(idempotency_key="k1", customer_id="c1", channel="console", topic="outage",
...                           thread_key="t", priority="critical", subject="Outage", body="We are on it.")])
>>> out = io.StringIO()
>>> w = Worker(ctx, channels={"console": ConsoleChannel(stream=out)}, worker_id="doc")
>>> w.run_once()
1
>>> w.stats["sent"], "We are on it." in out.getvalue()
(1, True)
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from forewarn.deliver import consent, outbox, retry
from forewarn.deliver.channels.base import (
    Channel,
    ChannelSpec,
    CustomerView,
    Delivery,
    SendResult,
    channel_spec,
)
from forewarn.deliver.outbox import Outcomes, apply_outcomes, claim, enqueue  # noqa: F401 (doctest)
from forewarn.deliver.quiet_hours import next_allowed
from forewarn.deliver.ratelimit import RateLimiter
from forewarn.deliver.render import (
    Renderer,
    TemplateMissing,
    clear_batch_cache,
    default_renderer,
    load_context_providers,
    render_message,
)
from forewarn.state.models import Customer

log = logging.getLogger(__name__)

_CUSTOMER_COLS = [
    Customer.__table__.c[n]
    for n in ("id", "name", "email", "phone", "timezone", "locale", "segment", "plan", "region", "attributes")
]


_NO_RULES: dict[tuple[str, str], bool] = {}


@dataclass
class _Batch:
    """One claimed batch on its way through prepare -> send -> record."""

    rows: Sequence[Any]
    now: datetime
    out: Outcomes = field(default_factory=Outcomes)
    ready: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[int, int] = field(default_factory=dict)
    record_now: datetime | None = None


def build_channel(ctx: Any, spec: ChannelSpec, concurrency: int) -> Channel:
    """Build a declared channel with what it needs beyond the settings: its connections and, for a signed
    channel, the signing secret in force (from the store, never a shipped default)."""
    options: dict[str, Any] = {"secret": ctx.secrets.webhooks.current} if spec.signed else {}
    return spec.build(ctx.settings, concurrency, **options)


class Worker:
    """Drains the outbox. ``channels`` maps short names to channels; when given, only those channels are
    claimed, otherwise every registered channel is available and built on first use from settings.
    """

    def __init__(
        self,
        ctx: Any,
        channels: Mapping[str, Channel] | None = None,
        worker_id: str | None = None,
        *,
        batch_size: int | None = None,
        concurrency: int = 1,
        lease_s: float = 300.0,
        renderer: Renderer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.delivery = self.settings.delivery
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"
        self.batch_size = batch_size or self.delivery.batch_size
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.renderer = renderer or default_renderer()
        load_context_providers()
        self.rng = rng or random.Random()
        self.explicit = consent.explicit_topics(self.delivery)
        self.only_channels = None if channels is None else list(channels)
        self.channels: dict[str, Channel] = dict(channels or {})
        self.limiter = RateLimiter(ctx.engine, self.delivery.rate_limits)
        self.stats: dict[str, int] = defaultdict(int)
        # seconds spent per phase (claim, prepare, send, record): where a batch's time goes
        self.timings: dict[str, float] = defaultdict(float)

    # ---- the loop -----------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Claim and process one batch; returns how many messages it claimed (0: nothing was due)."""
        batch = self._claim_and_prepare(now)
        if batch is None:
            return 0
        self._send_and_record(batch)
        return len(batch.rows)

    def drain(self, now: datetime | None = None, max_batches: int | None = None) -> int:
        """Run batches until nothing is due (or ``max_batches``); returns messages processed.

        Pipelined: while one batch is being sent and recorded (in a helper thread), the next is claimed and
        prepared. Per-thread order still holds: a claimed batch's rows stay ``sending`` until recorded, which
        holds back later messages of their threads.
        """
        total, batches = 0, 0
        with ThreadPoolExecutor(1, thread_name_prefix="fw-deliver") as pool:
            inflight: Future[None] | None = None
            try:
                while max_batches is None or batches < max_batches:
                    batch = self._claim_and_prepare(now)
                    if batch is None:
                        if inflight is None:
                            break
                        inflight.result()  # its outcomes may make later thread messages due
                        inflight = None
                        continue
                    if inflight is not None:
                        inflight.result()
                    inflight = pool.submit(self._send_and_record, batch)
                    total += len(batch.rows)
                    batches += 1
            finally:
                if inflight is not None:
                    inflight.result()
        return total

    def run_forever(self, stop_event: threading.Event, poll_s: float = 1.0) -> None:
        """Process batches until ``stop_event`` is set, sleeping ``poll_s`` when nothing is due.

        A database or channel error in one batch is logged and retried after ``poll_s``: claimed rows that did
        not get an outcome return after their lease.
        """
        try:
            while not stop_event.is_set():
                try:
                    n = self.drain(max_batches=100)
                except Exception:
                    log.exception("delivery batch failed; retrying in %.1fs", poll_s)
                    n = 0
                if n == 0:
                    stop_event.wait(poll_s)
        finally:
            self.close()

    def close(self) -> None:
        for ch in self.channels.values():
            try:
                ch.close()
            except Exception:  # closing is best effort
                log.exception("closing channel %s", ch.name)

    # ---- one batch -----------------------------------------------------------------------------------

    def channel(self, name: str) -> Channel | None:
        ch = self.channels.get(name)
        if ch is None and self.only_channels is None:
            spec = channel_spec(name)
            if spec is None:
                return None
            ch = self.channels[name] = build_channel(self.ctx, spec, self.concurrency)
        return ch

    def _load_people(
        self, session: Session, customer_ids: Sequence[str]
    ) -> tuple[dict[str, CustomerView], dict[str, dict[tuple[str, str], bool]]]:
        people: dict[str, CustomerView] = {}
        rules: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
        ids = list(set(customer_ids))
        conn = session.connection()  # plain rows: no ORM identity map for a batch of a thousand customers
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            for r in conn.execute(select(*_CUSTOMER_COLS).where(Customer.id.in_(chunk))):
                people[r.id] = CustomerView(
                    r.id,
                    r.name,
                    r.email,
                    r.phone,
                    r.timezone or "UTC",
                    r.locale or "en",
                    r.segment,
                    r.plan,
                    r.region,
                    r.attributes or {},
                )
            rules.update(consent.load_rules(conn, chunk))
        return people, rules

    @staticmethod
    def _needs_consent(row: Any) -> bool:
        """A message to a person (its channel's declaration says so), not a playbook's automation call."""
        spec = channel_spec(row.channel)
        return (spec is None or spec.needs_consent) and not (row.payload or {}).get("automation")

    def process(self, rows: Sequence[Any], now: datetime) -> Outcomes:
        """Decide, render and send claimed rows; returns their outcomes (not yet written)."""
        batch = self._prepare(rows, now)
        self._send(batch)
        return batch.out

    def _claim_and_prepare(self, now: datetime | None) -> _Batch | None:
        t = (now or datetime.now(UTC)).astimezone(UTC)
        clock = time.perf_counter()
        with self.ctx.engine.begin() as conn:
            rows = claim(
                conn, self.worker_id, self.batch_size, self.lease_s, now=t, channels=self.only_channels
            )
        self.timings["claim"] += time.perf_counter() - clock
        if not rows:
            return None
        batch = self._prepare(rows, t)
        batch.record_now = now
        return batch

    def _send_and_record(self, batch: _Batch) -> None:
        self._send(batch)
        clock = time.perf_counter()
        with self.ctx.engine.begin() as conn:
            apply_outcomes(conn, batch.out, now=batch.record_now or datetime.now(UTC))
        self.timings["record"] += time.perf_counter() - clock
        for k, v in batch.out.counts().items():
            self.stats[k] += v
        self.stats["claimed"] += len(batch.rows)
        self.stats["batches"] += 1

    def _prepare(self, rows: Sequence[Any], now: datetime) -> _Batch:
        """Consent, address, quiet hours, rate limit and rendering for a claimed batch."""
        clock = time.perf_counter()
        batch = _Batch(rows, now)
        out, ready = batch.out, batch.ready
        waiting: dict[str, int] = defaultdict(int)
        # rate-limited channels take the tokens the whole batch could need in one go, and give back the rest
        wanted = Counter(r.channel for r in rows if self.limiter.limited(r.channel))
        tokens: dict[str, int] = {}
        critical_skips = self.delivery.critical_overrides_quiet_hours
        max_attempts = self.delivery.max_attempts
        quiet: dict[str, datetime | None] = {}  # per time zone: the same answer for the whole batch
        public_url = self.settings.public_url
        with Session(self.ctx.engine) as session:
            people, rules = self._load_people(session, [r.customer_id for r in rows])
            for row in rows:
                batch.attempts[row.id] = row.attempts
                if row.attempts > max_attempts:
                    # claimed again after leases ran out too often: a message that kills its worker
                    out.dead.append((row.id, row.last_error or f"lease expired {row.attempts - 1} times"))
                    continue
                customer = people.get(row.customer_id)
                if customer is None:
                    # erased while the message waited (the outbox has no foreign key: see migration 0006)
                    out.suppressed.append((row.id, "customer no longer exists"))
                    continue
                if self._needs_consent(row) and not consent.allows(
                    rules.get(row.customer_id, _NO_RULES), row.channel, row.topic, self.explicit
                ):
                    out.suppressed.append((row.id, f"no consent: {row.channel}/{row.topic}"))
                    continue
                ch = self.channel(row.channel)
                if ch is None:
                    out.dead.append((row.id, f"unknown channel {row.channel!r}"))
                    continue
                address = row.address or ch.address_for(customer)
                if ch.requires_address and not address:
                    out.suppressed.append((row.id, f"no address: {row.channel}"))
                    continue
                if row.priority != "critical" or not critical_skips:
                    tz = customer.timezone
                    if tz not in quiet:
                        quiet[tz] = next_allowed(now, tz, self.delivery)
                    resume = quiet[tz]
                    if resume is not None:
                        out.deferred.append((row.id, resume, f"quiet hours until {resume.isoformat()}"))
                        continue
                if row.channel in wanted:
                    if row.channel not in tokens:
                        tokens[row.channel] = self.limiter.acquire(row.channel, wanted[row.channel])
                    wanted[row.channel] -= 1
                    if tokens[row.channel] <= 0:
                        waiting[row.channel] += 1
                        wait = self.limiter.wait_time(row.channel, waiting[row.channel])
                        out.deferred.append(
                            (row.id, now + timedelta(seconds=wait), f"rate limit: {row.channel}")
                        )
                        continue
                    tokens[row.channel] -= 1
                try:
                    rendered = render_message(
                        session, row, customer, renderer=self.renderer, public_url=public_url
                    )
                except (TemplateMissing, jinja2.TemplateError) as exc:
                    out.dead.append((row.id, f"template: {type(exc).__name__}: {exc}"))
                    continue
                except Exception as exc:  # a loader's database hiccup: try again later
                    self._fail(out, row.id, row.attempts, f"render: {type(exc).__name__}: {exc}", now)
                    continue
                payload = row.payload
                data = {k: v for k, v in payload.items() if k != "template"} if payload else {}
                ready[row.channel].append(
                    Delivery(
                        row.id,
                        row.idempotency_key,
                        row.channel,
                        address,
                        rendered.subject,
                        rendered.body,
                        row.customer_id,
                        row.topic,
                        row.thread_key,
                        row.priority,
                        row.attempts,
                        row.incident_id,
                        data,
                    )
                )
            clear_batch_cache(session)
        for channel, left in tokens.items():
            self.limiter.release(channel, left)
        self.timings["prepare"] += time.perf_counter() - clock
        return batch

    def _send(self, batch: _Batch) -> None:
        clock = time.perf_counter()
        out, now = batch.out, batch.now
        for name, deliveries in batch.ready.items():
            ch = self.channels[name]
            try:
                results = ch.send_batch(deliveries)
            except Exception as exc:  # a channel bug: retry the whole group later
                log.exception("channel %s failed a batch", name)
                results = [
                    SendResult(d.id, ok=False, error=f"{type(exc).__name__}: {exc}") for d in deliveries
                ]
            for r in results:
                if r.ok:
                    out.sent.append(r.id)
                elif r.permanent:
                    out.dead.append((r.id, r.error or "permanent failure"))
                else:
                    self._fail(out, r.id, batch.attempts[r.id], r.error or "failed", now, r.retry_after)
        self.timings["send"] += time.perf_counter() - clock

    def _fail(
        self,
        out: Outcomes,
        msg_id: int,
        attempt: int,
        error: str,
        now: datetime,
        retry_after: float | None = None,
    ) -> None:
        if retry.should_dead_letter(attempt, self.delivery):
            out.dead.append((msg_id, f"{error} (gave up after {attempt} attempts)"))
            return
        when = retry.next_attempt_at(now, attempt, self.delivery, self.rng)
        if retry_after:
            when = max(when, now + timedelta(seconds=retry_after))
        out.failed.append((msg_id, when, error))


class BackgroundWorker:
    """A :class:`Worker` running in a daemon thread (``forewarn serve`` starts one); ``stop()`` ends it."""

    def __init__(self, ctx: Any, poll_s: float = 1.0, **worker_options: Any) -> None:
        self.worker = Worker(ctx, **worker_options)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self.worker.run_forever,
            args=(self.stop_event, poll_s),
            name="forewarn-worker",
            daemon=True,
        )

    def start(self) -> BackgroundWorker:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)


def start_background_worker(ctx: Any, poll_s: float = 1.0, **worker_options: Any) -> BackgroundWorker:
    """Start delivering in a background thread of this process; returns the handle to ``stop()`` it.

    >>> # in an app's startup:  bg = start_background_worker(ctx);  at shutdown:  bg.stop()
    """
    return BackgroundWorker(ctx, poll_s=poll_s, **worker_options).start()


def wait_until_drained(ctx: Any, timeout_s: float = 30.0, poll_s: float = 0.05) -> bool:
    """Block until no message is pending, failed or sending (for tests and demos)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with ctx.engine.connect() as conn:
            counts = outbox.counts_by_status(conn)
        if not any(counts.get(s) for s in outbox.IN_FLIGHT):
            return True
        time.sleep(poll_s)
    return False
