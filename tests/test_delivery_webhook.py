"""Webhook delivery end to end: outbox -> worker -> a real HTTP receiver on loopback.

Covers: a notice series arrives complete and in order per thread (even when one message needs a retry), HMAC
signatures verify, 5xx is retried with backoff then dead-lettered, 4xx is dead at once, consent off means no
request and a recorded reason, quiet hours defer, the rate limit holds, SMS/chat gateways, and on PostgreSQL
(and SQLite) two workers sharing the outbox never double-send.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.deliver.channels.webhook import WebhookChannel, verify
from forewarn.deliver.outbox import TABLE, enqueue
from forewarn.deliver.receivers import Received, WebhookReceiver
from forewarn.deliver.render import register_context
from forewarn.deliver.worker import Worker
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Consent, Customer

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 6, 1, tzinfo=UTC)  # when test messages are enqueued: before every fake "now" below


def put(session: Any, messages: list[dict[str, Any]]) -> int:
    return enqueue(session, messages, now=T0)


def make_ctx(tmp_path: Any, url: str | None = None, **delivery: Any) -> Context:
    url = url or f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    opts = {"quiet_hours_start": 0, "quiet_hours_end": 0, "backoff_base_s": 1.0, "max_attempts": 4}
    opts.update(delivery)
    return Context(Settings(home=tmp_path, database_url=url, delivery=opts, webhook={"secret": "s3cret"}))


def add_customers(ctx: Context, n: int, **fields: Any) -> list[str]:
    ids = [f"c{i}" for i in range(n)]
    rows = [
        {
            "id": cid,
            "name": f"Customer {cid}",
            "email": f"{cid}@example.org",
            "phone": f"+3247000{i:04d}",
            "timezone": "UTC",
            "locale": "en",
            "channels": [],
            "attributes": {},
            **fields,
        }
        for i, cid in enumerate(ids)
    ]
    with transaction(ctx.engine) as s:
        s.execute(Customer.__table__.insert(), rows)
    return ids


def message(
    cid: str, key: str, thread: str, body: str, channel: str = "webhook", **kw: Any
) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "customer_id": cid,
        "channel": channel,
        "topic": "outage",
        "thread_key": thread,
        "subject": f"subject {key}",
        "body": body,
        **kw,
    }


def rows(ctx: Context) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        return {r.idempotency_key: r for r in conn.execute(sa.select(TABLE))}


def drain(worker: Worker, start: datetime, step_s: float = 3600, rounds: int = 50) -> datetime:
    """Run the worker on a fake clock that jumps ``step_s`` whenever nothing is due."""
    now = start
    for _ in range(rounds):
        if worker.run_once(now=now) == 0:
            with worker.ctx.engine.connect() as conn:
                waiting = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(TABLE)
                    .where(TABLE.c.status.in_(("pending", "failed", "sending")))
                ).scalar()
            if not waiting:
                return now
            now += timedelta(seconds=step_s)
    raise AssertionError("outbox did not drain")


@pytest.fixture
def receiver() -> Any:
    with WebhookReceiver() as rx:
        yield rx


def webhook_worker(ctx: Context, url: str, **kw: Any) -> Worker:
    ch = WebhookChannel(
        url=url, secret=ctx.settings.webhook.secret, timeout_s=2, concurrency=kw.pop("conc", 2)
    )
    return Worker(ctx, channels={"webhook": ch}, worker_id=kw.pop("worker_id", "t"), **kw)


def test_series_arrives_complete_in_order_signed(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path)
    ids = add_customers(ctx, 20)
    # the first notice of customer c3's thread fails once: its update and all-clear must still come after it
    codes: list[int] = []

    def status(req: Received) -> int:
        codes.append(503 if req.key == "inc1:u0:c3" and 503 not in codes else 200)
        return codes[-1]

    with transaction(ctx.engine) as s:
        for seq, text in enumerate(["opened", "update", "resolved"]):
            put(s, [message(c, f"inc1:u{seq}:{c}", f"inc1:{c}", f"{text} for {c}") for c in ids])
    with WebhookReceiver(status=status) as rx:
        drain(webhook_worker(ctx, rx.url), NOON, step_s=5)
    by_thread: dict[str, list[str]] = defaultdict(list)
    for req, code in zip(rx.received, codes, strict=True):
        doc = req.json()
        assert req.headers["idempotency-key"] == doc["id"]
        assert verify(req.body, "s3cret", req.headers["x-forewarn-signature"])
        assert not verify(req.body, "wrong", req.headers["x-forewarn-signature"])
        if code == 200:
            by_thread[doc["thread"]].append(doc["body"].split(" ")[0])
    assert len(by_thread) == 20
    assert all(seq == ["opened", "update", "resolved"] for seq in by_thread.values()), by_thread
    state = rows(ctx)
    assert {r.status for r in state.values()} == {"sent"}
    assert state["inc1:u0:c3"].attempts == 2
    assert len(rx.received) == 61  # 60 messages + the one retry


def test_5xx_retried_with_backoff_then_dead(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path, max_attempts=4, backoff_base_s=10)
    add_customers(ctx, 1)
    with transaction(ctx.engine) as s:
        put(s, [message("c0", "k-500", "t0", "hello")])
    with WebhookReceiver(status=500) as rx:
        w = webhook_worker(ctx, rx.url)
        now = NOON
        gaps = []
        for attempt in range(1, 5):
            assert w.run_once(now=now) == 1
            r = rows(ctx)["k-500"]
            assert r.attempts == attempt
            if attempt < 4:
                assert r.status == "failed" and "HTTP 500" in r.last_error
                gap = (r.next_attempt_at - now).total_seconds()
                nominal = 10 * 2 ** (attempt - 1)
                assert nominal / 2 <= gap <= nominal  # exponential backoff with jitter
                gaps.append(gap)
                assert w.run_once(now=now + timedelta(seconds=gap / 2)) == 0  # not due before its time
                now = r.next_attempt_at
        r = rows(ctx)["k-500"]
        assert r.status == "dead" and "HTTP 500" in r.last_error and "4 attempts" in r.last_error
        assert w.run_once(now=now + timedelta(days=1)) == 0
    assert len(rx.received) == 4 and set(rx.keys()) == {"k-500"}


@pytest.mark.parametrize("code,final", [(422, "dead"), (404, "dead"), (429, "failed"), (408, "failed")])
def test_4xx_dead_at_once_except_408_429(tmp_path: Any, code: int, final: str) -> None:
    ctx = make_ctx(tmp_path)
    add_customers(ctx, 1)
    with transaction(ctx.engine) as s:
        put(s, [message("c0", "k", "t0", "hello")])
    with WebhookReceiver(status=code) as rx:
        webhook_worker(ctx, rx.url).run_once(now=NOON)
    r = rows(ctx)["k"]
    assert (r.status, r.attempts, len(rx.received)) == (final, 1, 1)
    assert f"HTTP {code}" in r.last_error


def test_consent_off_means_no_message_with_reason(tmp_path: Any, receiver: WebhookReceiver) -> None:
    ctx = make_ctx(tmp_path)
    add_customers(ctx, 3)
    with transaction(ctx.engine) as s:
        s.add_all(
            [
                Consent(customer_id="c0", channel="webhook", topic="*", granted=False),  # off for everything
                Consent(
                    customer_id="c1", channel="webhook", topic="*", granted=False
                ),  # off, but outage allowed
                Consent(customer_id="c1", channel="webhook", topic="outage", granted=True),
                Consent(
                    customer_id="c2", channel="webhook", topic="outage", granted=False
                ),  # off for outages
            ]
        )
        s.flush()
        put(s, [message(c, f"k{c}", f"t{c}", "hi") for c in ("c0", "c1", "c2")])
    webhook_worker(ctx, receiver.url).run_once(now=NOON)
    state = rows(ctx)
    assert state["kc0"].status == "suppressed" and state["kc0"].reason == "no consent: webhook/outage"
    assert state["kc1"].status == "sent"
    assert state["kc2"].status == "suppressed" and state["kc2"].reason == "no consent: webhook/outage"
    assert receiver.keys() == ["kc1"]


def test_quiet_hours_defer_until_morning_and_critical_override(
    tmp_path: Any, receiver: WebhookReceiver
) -> None:
    ctx = make_ctx(tmp_path, quiet_hours_start=21, quiet_hours_end=8, critical_overrides_quiet_hours=True)
    add_customers(ctx, 2, timezone="Europe/Berlin")
    night = datetime(2026, 6, 10, 21, 30, tzinfo=UTC)  # 23:30 in Berlin (CEST)
    with transaction(ctx.engine) as s:
        put(s, [message("c0", "normal", "t0", "hi"), message("c1", "crit", "t1", "hi", priority="critical")])
    w = webhook_worker(ctx, receiver.url)
    w.run_once(now=night)
    state = rows(ctx)
    assert state["crit"].status == "sent"
    deferred = state["normal"]
    morning = datetime(2026, 6, 11, 6, 0, tzinfo=UTC)  # 08:00 in Berlin
    assert deferred.status == "pending" and deferred.next_attempt_at == morning
    assert deferred.reason == f"quiet hours until {morning.isoformat()}" and deferred.attempts == 0
    assert w.run_once(now=morning - timedelta(minutes=1)) == 0
    assert w.run_once(now=morning) == 1
    assert rows(ctx)["normal"].status == "sent" and receiver.keys() == ["crit", "normal"]


def test_critical_waits_too_when_override_is_off(tmp_path: Any, receiver: WebhookReceiver) -> None:
    ctx = make_ctx(tmp_path, quiet_hours_start=21, quiet_hours_end=8, critical_overrides_quiet_hours=False)
    add_customers(ctx, 1, timezone="America/New_York")
    night = datetime(2026, 6, 11, 3, 0, tzinfo=UTC)  # 23:00 in New York
    with transaction(ctx.engine) as s:
        put(s, [message("c0", "crit", "t0", "hi", priority="critical")])
    webhook_worker(ctx, receiver.url).run_once(now=night)
    r = rows(ctx)["crit"]
    assert r.status == "pending" and r.reason.startswith("quiet hours until 2026-06-11T12:00")
    assert receiver.keys() == []


def test_rate_limit_respected(tmp_path: Any, receiver: WebhookReceiver) -> None:
    rate = 25.0
    ctx = make_ctx(tmp_path, rate_limits={"webhook": rate})
    ids = add_customers(ctx, 75)
    with transaction(ctx.engine) as s:
        put(s, [message(c, f"k{c}", f"t{c}", "hi") for c in ids])
    w = webhook_worker(ctx, receiver.url)
    started = time.monotonic()
    deadline = started + 20
    while len(receiver.received) < 75 and time.monotonic() < deadline:
        if w.run_once() == 0:
            time.sleep(0.02)
    assert sorted(receiver.keys()) == sorted(f"k{c}" for c in ids)  # all sent, once each
    times = [r.at for r in receiver.received]
    # a bucket of 25/s starting full (burst 25) needs >= (75 - 25) / 25 = 2 s for 75 messages
    assert times[-1] - times[0] >= (75 - rate) / rate * 0.9
    # and in no one-second window did more than rate + burst arrive
    assert max(sum(1 for u in times if t <= u < t + 1) for t in times) <= 2 * rate
    assert {r.status for r in rows(ctx).values()} == {"sent"}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_workers_share_one_rate_limit(
    tmp_path: Any, receiver: WebhookReceiver, backend: str, request: pytest.FixtureRequest
) -> None:
    # a provider's limit is per account: two workers (own engines, own connections) together stay under it
    rate = 20.0
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    ctxs = [make_ctx(tmp_path, url, rate_limits={"webhook": rate}) for _ in range(2)]
    ids = add_customers(ctxs[0], 80)
    with transaction(ctxs[0].engine) as s:
        put(s, [message(c, f"k{c}", f"t{c}", "hi") for c in ids])
    workers = [webhook_worker(c, receiver.url, worker_id=f"w{i}", batch_size=10) for i, c in enumerate(ctxs)]
    deadline = time.monotonic() + 30

    def drain(w: Worker) -> None:
        while len(receiver.received) < 80 and time.monotonic() < deadline:
            if w.run_once() == 0:
                time.sleep(0.01)

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(receiver.keys()) == sorted(f"k{c}" for c in ids)  # all sent, once each
    assert all(w.stats["sent"] > 0 for w in workers)  # both took part
    times = sorted(r.at for r in receiver.received)
    # one shared bucket (burst 20, 20/s): 80 messages need >= 3 s; two private buckets would need 1.5 s
    assert times[-1] - times[0] >= (80 - rate) / rate * 0.9
    # tokens are taken when a batch is prepared and arrive a little later: allow 0.25 s of that jitter
    assert max(sum(1 for u in times if t <= u < t + 1) for t in times) <= rate + rate * 1.25
    for c in ctxs:
        c.close()


def test_templates_render_with_registered_context_and_locale(
    tmp_path: Any, receiver: WebhookReceiver
) -> None:
    ctx = make_ctx(tmp_path)
    add_customers(ctx, 1, timezone="Europe/Paris", locale="fr-FR", name="Zoé")
    calls = []

    def loader(session: Any, msg: Any) -> dict[str, Any]:
        calls.append(msg.idempotency_key)
        return {"when": "2026-03-02T08:05:00Z"}

    register_context("example", loader)
    with transaction(ctx.engine) as s:
        put(
            s,
            [
                {
                    "idempotency_key": "tpl",
                    "customer_id": "c0",
                    "channel": "webhook",
                    "topic": "outage",
                    "thread_key": "t",
                    "payload": {"template": "example", "incident": 7},
                }
            ],
        )
    webhook_worker(ctx, receiver.url).run_once(now=NOON)
    doc = receiver.received[0].json()
    assert doc["subject"] == "Bonjour Zoé"
    assert doc["body"] == "lundi 2 mars 2026 à 09:05 (CET)"
    assert doc["data"] == {"incident": 7} and calls == ["tpl"]


def test_missing_template_is_dead_letter(tmp_path: Any, receiver: WebhookReceiver) -> None:
    ctx = make_ctx(tmp_path)
    add_customers(ctx, 1)
    with transaction(ctx.engine) as s:
        put(
            s,
            [
                {
                    "idempotency_key": "nt",
                    "customer_id": "c0",
                    "channel": "webhook",
                    "topic": "outage",
                    "thread_key": "t",
                    "payload": {"template": "no_such_template"},
                }
            ],
        )
    webhook_worker(ctx, receiver.url).run_once(now=NOON)
    r = rows(ctx)["nt"]
    assert r.status == "dead" and "no_such_template.webhook.j2 or no_such_template.j2" in r.last_error


def test_sms_gateway_uses_phone_and_suppresses_without_one(tmp_path: Any, receiver: WebhookReceiver) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    ctx = Context(
        Settings(
            home=tmp_path,
            database_url=url,
            webhook={"gateways": {"sms": receiver.url}},
            delivery={"quiet_hours_start": 0, "quiet_hours_end": 0},
        )
    )
    add_customers(ctx, 2)
    with transaction(ctx.engine) as s:
        s.execute(sa.update(Customer).where(Customer.id == "c1").values(phone=None))
        put(s, [message(c, f"sms-{c}", f"t{c}", "Outage in your area", channel="sms") for c in ("c0", "c1")])
    w = Worker(ctx, worker_id="sms")  # channels built from settings by short name
    w.run_once(now=NOON)
    w.close()
    state = rows(ctx)
    assert state["sms-c0"].status == "sent"
    assert state["sms-c1"].status == "suppressed" and state["sms-c1"].reason == "no address: sms"
    (req,) = receiver.received
    assert req.json()["to"] == "+32470000000" and req.headers["x-forewarn-channel"] == "sms"


def test_unconfigured_webhook_url_is_permanent(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path)
    add_customers(ctx, 1)
    with transaction(ctx.engine) as s:
        put(s, [message("c0", "k", "t", "hi")])
    Worker(ctx, worker_id="x").run_once(now=NOON)
    r = rows(ctx)["k"]
    assert r.status == "dead" and "settings.webhook.url" in r.last_error


def _two_workers_share(ctx: Context, n: int) -> tuple[WebhookReceiver, list[Worker]]:
    ids = add_customers(ctx, n)
    with transaction(ctx.engine) as s:
        put(s, [message(c, f"k{c}", f"t{c}", "hi") for c in ids])
    rx = WebhookReceiver().start()
    workers = [webhook_worker(ctx, rx.url, worker_id=f"w{i}", batch_size=50) for i in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            barrier.wait()
            while w.run_once() > 0:
                pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    rx.stop()
    assert not errors, errors
    return rx, workers


def _assert_no_double_send(ctx: Context, rx: WebhookReceiver, workers: list[Worker], n: int) -> None:
    keys = rx.keys()
    assert len(keys) == n and len(set(keys)) == n  # every message exactly once
    assert {r.status for r in rows(ctx).values()} == {"sent"}
    assert all(w.stats["sent"] > 0 for w in workers), [dict(w.stats) for w in workers]
    assert sum(w.stats["sent"] for w in workers) == n


@pytest.mark.postgres
def test_two_workers_never_double_send_postgres(tmp_path: Any, pg_url: str) -> None:
    ctx = make_ctx(tmp_path, url=pg_url)
    rx, workers = _two_workers_share(ctx, 3000)
    _assert_no_double_send(ctx, rx, workers, 3000)
    ctx.close()


def test_two_workers_never_double_send_sqlite(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path)
    rx, workers = _two_workers_share(ctx, 1500)
    _assert_no_double_send(ctx, rx, workers, 1500)


@pytest.mark.parametrize("style", ["http10-close", "chunked", "keepalive-then-close"])
def test_webhook_client_against_stdlib_http_server(style: str) -> None:
    """The webhook client against Python's own http.server: HTTP/1.0 answers ended by closing the connection,
    chunked answers, and a server that closes a kept-alive connection between requests."""
    import http.server

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0" if style == "http10-close" else "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert verify(body, "k", self.headers["X-Forewarn-Signature"])
            seen.append(self.headers["Idempotency-Key"])
            self.send_response(202)
            if style == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"2\r\nok\r\n0\r\n\r\n")
            elif style == "keepalive-then-close":
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                self.close_connection = True  # closes without saying so: the client must reconnect
            else:
                self.end_headers()
                self.wfile.write(b"accepted")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ch = WebhookChannel(url=f"http://127.0.0.1:{server.server_address[1]}/in", secret="k", timeout_s=2)
        from forewarn.deliver.channels.base import Delivery

        results = [ch.send(Delivery(i, f"k{i}", "webhook", None, "s", "b", "c")) for i in range(5)]
        ch.close()
    finally:
        server.shutdown()
    assert all(r.ok for r in results), results
    assert seen == [f"k{i}" for i in range(5)]  # each exactly once, even across reconnects


def test_a_message_to_an_erased_customer_is_suppressed_not_sent(
    tmp_path: Any, receiver: WebhookReceiver
) -> None:
    ctx = make_ctx(tmp_path)
    add_customers(ctx, 1)
    with transaction(ctx.engine) as s:
        # the outbox has no foreign key (bulk fan-outs): a customer erased while a fan-out ran leaves this
        put(s, [message("c0", "kept", "t0", "hi"), message("ghost", "orphan", "t1", "hi")])
    webhook_worker(ctx, receiver.url).run_once(now=T0)
    got = rows(ctx)
    assert got["orphan"].status == "suppressed" and got["orphan"].reason == "customer no longer exists"
    assert got["kept"].status == "sent" and receiver.keys() == ["kept"]
