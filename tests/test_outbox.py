"""The outbox and its small parts: enqueue, claims and leases, per-thread order, outcomes; quiet hours,
backoff, rate limits, locales and templates. Store-dependent tests run on SQLite and PostgreSQL alike."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from forewarn.config import DeliverySettings
from forewarn.deliver import locales, retry
from forewarn.deliver.channels.base import CustomerView, available_channels, create_channel
from forewarn.deliver.outbox import TABLE, Outcomes, apply_outcomes, claim, counts_by_status, enqueue
from forewarn.deliver.quiet_hours import next_allowed
from forewarn.deliver.ratelimit import refill
from forewarn.deliver.render import Renderer, TemplateMissing, render_template, split_subject
from forewarn.state.db import open_store, transaction, upgrade
from forewarn.state.models import Customer

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 's.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    eng = open_store(url)
    with transaction(eng) as s:
        s.execute(
            Customer.__table__.insert(), [{"id": f"c{i}", "channels": [], "attributes": {}} for i in range(5)]
        )
    yield eng
    eng.dispose()


def msg(key: str, cid: str = "c0", thread: str | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "customer_id": cid,
        "channel": "console",
        "topic": "outage",
        "thread_key": thread or f"t-{key}",
        "body": f"body {key}",
        **kw,
    }


def status_of(engine: Any) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        return {r.idempotency_key: (r.status, r.attempts) for r in conn.execute(sa.select(TABLE))}


def test_enqueue_is_bulk_and_idempotent(engine: Any) -> None:
    with transaction(engine) as s:
        assert enqueue(s, [msg(f"k{i}", f"c{i % 5}") for i in range(7000)], now=T0) == 7000
    with transaction(engine) as s:  # a replay, overlapping new ones: only the new are inserted
        assert enqueue(s, [msg(f"k{i}", f"c{i % 5}") for i in range(6990, 7010)], now=T0) == 10
    with engine.connect() as conn:
        assert counts_by_status(conn) == {"pending": 7010}


def test_enqueue_rolls_back_with_the_producer_transaction(engine: Any) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as s:
        enqueue(s, [msg("k1")], now=T0)
        raise RuntimeError("the incident update failed")
    assert status_of(engine) == {}


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"idempotency_key": ""}, "message #1: field 'idempotency_key' is required"),
        ({"thread_key": None}, "field 'thread_key' is required"),
        ({"priority": "urgent"}, "field 'priority' must be one of"),
        ({"body": "", "payload": {}}, "give either 'body' or payload"),
        ({"colour": "red"}, "unknown field(s) ['colour']"),
    ],
)
def test_enqueue_rejects_bad_messages_naming_the_field(
    tmp_path: Path, bad: dict[str, Any], needle: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url)
    with pytest.raises(ValueError, match=None) as err, transaction(open_store(url)) as s:
        enqueue(s, [msg("ok"), {**msg("bad"), **bad}])
    assert needle in str(err.value)


def test_claim_respects_limit_lease_and_expiry(engine: Any) -> None:
    with transaction(engine) as s:
        enqueue(s, [msg(f"k{i}") for i in range(30)], now=T0)
    with engine.begin() as conn:
        first = claim(conn, "w1", limit=10, lease_s=60, now=T0)
    assert len(first) == 10 and all(r.status == "sending" and r.attempts == 1 for r in first)
    assert first[0].reason == "claimed by w1"
    with engine.connect() as conn:
        lease = conn.execute(sa.select(TABLE.c.next_attempt_at).where(TABLE.c.id == first[0].id)).scalar()
    assert lease == T0 + timedelta(seconds=60)
    with engine.begin() as conn:
        second = claim(conn, "w2", limit=100, lease_s=60, now=T0 + timedelta(seconds=30))
    assert len(second) == 20 and not {r.id for r in first} & {r.id for r in second}
    with engine.begin() as conn:  # nothing left until the leases run out...
        assert claim(conn, "w3", limit=100, now=T0 + timedelta(seconds=59)) == []
    with engine.begin() as conn:  # ...then w1's unfinished claims come back (w1 "crashed")
        again = claim(conn, "w3", limit=100, now=T0 + timedelta(seconds=61))
    assert {r.id for r in again} == {r.id for r in first} and all(r.attempts == 2 for r in again)


def test_claim_takes_critical_first_then_by_due_time(engine: Any) -> None:
    # a backlog of low-priority playbook notices, older than the outage notices queued after it
    backlog = [msg(f"low{i}", priority="low") for i in range(30)] + [msg("norm", priority="normal")]
    with transaction(engine) as s:
        enqueue(s, backlog, now=T0)
        enqueue(
            s,
            [msg("crit0", priority="critical"), msg("high0", priority="high")],
            now=T0 + timedelta(seconds=60),
        )
        enqueue(s, [msg("crit1", priority="critical")], now=T0 + timedelta(seconds=90))
        enqueue(s, [msg("crit-later", priority="critical")], now=T0 + timedelta(hours=1))  # not due yet
    now = T0 + timedelta(minutes=2)
    with engine.begin() as conn:
        got = {r.idempotency_key for r in claim(conn, "w", limit=4, now=now)}
    assert got == {"crit0", "crit1", "high0", "norm"}
    with engine.begin() as conn:
        rest = {r.idempotency_key for r in claim(conn, "w", limit=100, now=now)}
    assert rest == {f"low{i}" for i in range(30)}  # the not-yet-due critical one waits for its time


def test_claim_keeps_thread_order(engine: Any) -> None:
    with transaction(engine) as s:
        enqueue(
            s,
            [msg("a0", thread="A"), msg("b0", thread="B"), msg("a1", thread="A"), msg("a2", thread="A")],
            now=T0,
        )
    with engine.begin() as conn:
        got = [r.idempotency_key for r in claim(conn, "w", limit=10, now=T0)]
    assert got == ["a0", "b0"]  # a1 waits for a0
    with engine.begin() as conn:
        assert claim(conn, "w", limit=10, now=T0) == []
        ids = {r.idempotency_key: r.id for r in conn.execute(sa.select(TABLE))}
        a0 = ids["a0"]
        apply_outcomes(conn, Outcomes(sent=[ids["b0"]], failed=[(a0, T0 + timedelta(minutes=5), "HTTP 503")]))
    with engine.begin() as conn:  # a0 failed and waits for its retry: a1 still waits behind it
        assert claim(conn, "w", limit=10, now=T0 + timedelta(minutes=1)) == []
    with engine.begin() as conn:
        assert [r.idempotency_key for r in claim(conn, "w", limit=10, now=T0 + timedelta(minutes=6))] == [
            "a0"
        ]
        apply_outcomes(conn, Outcomes(sent=[a0]), now=T0)
    with engine.begin() as conn:
        assert [r.idempotency_key for r in claim(conn, "w", limit=10, now=T0 + timedelta(minutes=6))] == [
            "a1"
        ]


def test_outcomes_apply_in_sets_and_never_overwrite_a_later_claimant(engine: Any) -> None:
    with transaction(engine) as s:
        enqueue(s, [msg(f"k{i}") for i in range(5)], now=T0)
    with engine.begin() as conn:
        rows = {r.idempotency_key: r.id for r in claim(conn, "w1", limit=5, now=T0)}
    later = T0 + timedelta(hours=1)
    with engine.begin() as conn:
        apply_outcomes(
            conn,
            Outcomes(
                sent=[rows["k0"]],
                failed=[(rows["k1"], later, "HTTP 500")],
                dead=[(rows["k2"], "HTTP 410")],
                suppressed=[(rows["k3"], "no consent: console/outage")],
                deferred=[(rows["k4"], later, "quiet hours")],
            ),
            now=T0,
        )
        # a stale second report for k0 (e.g. from a worker whose lease expired) changes nothing
        apply_outcomes(conn, Outcomes(dead=[(rows["k0"], "late")]), now=T0)
    assert status_of(engine) == {
        "k0": ("sent", 1),
        "k1": ("failed", 1),
        "k2": ("dead", 1),
        "k3": ("suppressed", 1),
        "k4": ("pending", 0),
    }


def test_quiet_hours_window_and_dst() -> None:
    d = DeliverySettings(quiet_hours_start=21, quiet_hours_end=8)
    # 20:59 local in Brussels (winter, UTC+1): allowed
    assert next_allowed(datetime(2026, 1, 10, 19, 59, tzinfo=UTC), "Europe/Brussels", d) is None
    # the night before spring-forward (29 March 2026): 08:00 local is UTC+2 -> 06:00 UTC
    assert next_allowed(datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "Europe/Brussels", d) == datetime(
        2026, 3, 29, 6, 0, tzinfo=UTC
    )
    # a window that does not wrap midnight, and an unknown zone meaning UTC
    d2 = DeliverySettings(quiet_hours_start=1, quiet_hours_end=5)
    assert next_allowed(datetime(2026, 1, 10, 2, 0, tzinfo=UTC), "Nowhere/Atlantis", d2) == datetime(
        2026, 1, 10, 5, 0, tzinfo=UTC
    )
    assert (
        next_allowed(
            datetime(2026, 1, 10, 2, 0, tzinfo=UTC),
            "UTC",
            DeliverySettings(quiet_hours_start=0, quiet_hours_end=0),
        )
        is None
    )


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    d = DeliverySettings(backoff_base_s=2, backoff_max_s=100)
    rng = random.Random(1)
    for attempt in range(1, 12):
        nominal = min(100, 2 * 2 ** (attempt - 1))
        delays = [retry.backoff_delay(attempt, d, rng) for _ in range(200)]
        assert nominal / 2 <= min(delays) and max(delays) <= nominal
        assert max(delays) - min(delays) > nominal * 0.3  # actually jittered


def test_token_bucket_refill() -> None:
    tokens, sent = 10.0, 0
    for ms in range(1, 2001):  # 2 s polled every ms from a bucket of burst 10, 100/s
        tokens = refill(tokens, (ms - 1) / 1000, ms / 1000, rate=100, burst=10)
        if tokens >= 1:
            tokens, sent = tokens - 1, sent + 1
    assert 205 <= sent <= 211  # 10 burst + 100/s * 2 s
    assert refill(0.0, 5.0, 4.0, rate=100, burst=10) == 0.0  # a clock that steps back adds nothing


def test_locales_and_templates() -> None:
    t = datetime(2026, 7, 4, 18, 5, tzinfo=UTC)
    assert locales.format_datetime(t, "Europe/Amsterdam", "nl") == "zaterdag 4 juli 2026 om 20:05 (CEST)"
    assert (
        locales.format_datetime(t, "America/Los_Angeles", "en") == "Saturday, July 4, 2026 at 11:05 AM (PDT)"
    )
    assert (
        locales.format_date("2026-07-04T18:05:00Z", "Europe/Madrid", "es-ES") == "sábado, 4 de julio de 2026"
    )
    assert locales.format_time(None) == ""
    with pytest.raises(TypeError, match="expected a datetime or ISO-8601 string"):
        locales.format_time(12345)
    r = render_template("example", "sms", {"customer": CustomerView("c", name="Jan", locale="de"), "when": t})
    assert r.subject == "Hallo Jan" and r.body == "Samstag, 4. Juli 2026, 18:05 Uhr (UTC)"
    assert split_subject("no subject line").subject == ""
    with pytest.raises(TemplateMissing, match="nope.email.j2 or nope.j2"):
        Renderer().template("nope", "email")


def test_channel_registry_by_short_name(tmp_path: Path) -> None:
    from forewarn.config import Settings

    assert set(available_channels()) >= {"email", "sms", "chat", "webhook", "console", "file"}
    s = Settings(home=tmp_path)
    assert create_channel("file", s).path == tmp_path / "deliveries.jsonl"  # type: ignore[attr-defined]
    assert create_channel("sms", s).name == "sms"
    with pytest.raises(ValueError, match="unknown channel 'pigeon'"):
        create_channel("pigeon", s)
