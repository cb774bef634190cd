"""Email delivery end to end through a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.deliver.channels.base import Delivery
from forewarn.deliver.channels.smtp import SmtpChannel, message_id
from forewarn.deliver.outbox import TABLE, enqueue
from forewarn.deliver.receivers import Mail, SmtpReceiver
from forewarn.deliver.worker import Worker
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Customer

T0 = datetime(2026, 6, 1, tzinfo=UTC)
NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def make_ctx(tmp_path: Path, port: int = 25, **smtp: Any) -> Context:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    return Context(
        Settings(
            home=tmp_path,
            database_url=url,
            smtp={"host": "127.0.0.1", "port": port, "sender": "noc@isp.example", **smtp},
            delivery={"quiet_hours_start": 0, "quiet_hours_end": 0, "max_attempts": 3},
        )
    )


def seed(ctx: Context, n: int, series: list[str], **fields: Any) -> None:
    with transaction(ctx.engine) as s:
        s.execute(
            Customer.__table__.insert(),
            [
                {
                    "id": f"c{i}",
                    "name": f"Ana {i}",
                    "email": f"ana{i}@example.org",
                    "timezone": "UTC",
                    "locale": "en",
                    "channels": ["email"],
                    "attributes": {},
                    **fields,
                }
                for i in range(n)
            ],
        )
        for seq, text in enumerate(series):
            enqueue(
                s,
                [
                    {
                        "idempotency_key": f"inc9:u{seq}:c{i}",
                        "customer_id": f"c{i}",
                        "channel": "email",
                        "topic": "outage",
                        "thread_key": f"inc9:c{i}",
                        "subject": f"[{seq}] {text}",
                        "body": f"{text} — Grüße, your ISP",
                    }
                    for i in range(n)
                ],
                now=T0,
            )


def statuses(ctx: Context) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        return {r.idempotency_key: r for r in conn.execute(sa.select(TABLE))}


def drain(w: Worker) -> None:
    for _ in range(20):
        if w.run_once(now=NOON) == 0:
            return


def test_series_arrives_complete_in_order_over_reused_connections(tmp_path: Path) -> None:
    with SmtpReceiver() as rx:
        ctx = make_ctx(tmp_path, port=rx.port)
        seed(ctx, 30, ["Outage in Gent", "Engineers on site", "Resolved"])
        w = Worker(
            ctx, channels={"email": SmtpChannel.from_settings(ctx.settings, concurrency=3)}, batch_size=25
        )
        drain(w)
        w.close()
    assert {r.status for r in statuses(ctx).values()} == {"sent"}
    assert len(rx.messages) == 90
    by_thread: dict[str, list[str]] = defaultdict(list)
    keys = set()
    for mail in rx.messages:
        msg = mail.message()
        key = msg["X-Idempotency-Key"]
        keys.add(key)
        assert msg["Message-ID"] == message_id(key, "isp.example")
        assert mail.mail_from == "noc@isp.example" and mail.rcpt_tos == [msg["To"]]
        assert msg.get_content().strip() == msg["Subject"].split("] ", 1)[1] + " — Grüße, your ISP"
        by_thread[msg["X-Forewarn-Thread"]].append(msg["Subject"][:3])
        assert msg["In-Reply-To"] == msg["References"]  # a thread reads as one conversation
    assert len(keys) == 90
    assert all(seq == ["[0]", "[1]", "[2]"] for seq in by_thread.values())
    # 3 threads, 4 batches: connections were reused, not opened per message
    assert w.channels["email"].connections_opened <= 3 and rx.sessions <= 3  # type: ignore[attr-defined]


def test_reconnects_after_the_relay_restarts(tmp_path: Path) -> None:
    rx = SmtpReceiver().start()
    ctx = make_ctx(tmp_path, port=rx.port)
    ch = SmtpChannel.from_settings(ctx.settings)
    d = Delivery(1, "k1", "email", "a@example.org", "s", "b", "c1")
    assert ch.send(d).ok
    rx.stop()  # the kept-alive session dies with the server
    rx2 = SmtpReceiver(port=rx.port).start()
    try:
        assert ch.send(Delivery(2, "k2", "email", "a@example.org", "s", "b", "c1")).ok
        assert ch.connections_opened == 2 and len(rx2.messages) == 1
    finally:
        ch.close()
        rx2.stop()


def test_5xx_is_dead_4xx_is_retried(tmp_path: Path) -> None:
    def reply(mail: Mail) -> str:
        return "550 5.1.1 mailbox unknown" if mail.rcpt_tos == ["ana0@example.org"] else "451 4.3.0 try later"

    with SmtpReceiver(reply=reply) as rx:
        ctx = make_ctx(tmp_path, port=rx.port)
        seed(ctx, 2, ["Outage"])
        w = Worker(ctx, channels={"email": SmtpChannel.from_settings(ctx.settings)})
        w.run_once(now=NOON)
        w.close()
    s = statuses(ctx)
    assert s["inc9:u0:c0"].status == "dead" and "SMTP 550" in s["inc9:u0:c0"].last_error
    assert s["inc9:u0:c1"].status == "failed" and "SMTP 451" in s["inc9:u0:c1"].last_error


def test_relay_down_is_retried_then_dead(tmp_path: Path) -> None:
    from forewarn.deliver.receivers import free_port

    ctx = make_ctx(tmp_path, port=free_port(), timeout_s=1)
    seed(ctx, 1, ["Outage"])
    w = Worker(ctx, channels={"email": SmtpChannel.from_settings(ctx.settings)})
    now = NOON
    for _ in range(3):
        w.run_once(now=now)
        now = statuses(ctx)["inc9:u0:c0"].next_attempt_at
    r = statuses(ctx)["inc9:u0:c0"]
    assert r.status == "dead" and r.attempts == 3 and "Connection" in r.last_error


def test_auth_login(tmp_path: Path) -> None:
    with SmtpReceiver(auth=("noc", "pw")) as rx:
        ctx = make_ctx(tmp_path, port=rx.port, username="noc", password="pw")
        seed(ctx, 1, ["Outage"])
        Worker(ctx, channels={"email": SmtpChannel.from_settings(ctx.settings)}).run_once(now=NOON)
        assert statuses(ctx)["inc9:u0:c0"].status == "sent" and len(rx.messages) == 1
    with SmtpReceiver(auth=("noc", "pw")) as rx:
        ch = SmtpChannel(host="127.0.0.1", port=rx.port, username="noc", password="wrong")
        r = ch.send(Delivery(1, "k", "email", "a@example.org", "s", "b", "c"))
        assert not r.ok and "535" in (r.error or "") and len(rx.messages) == 0


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate"
)
def test_starttls_with_auth(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with SmtpReceiver(auth=("noc", "pw"), tls_context=server_tls) as rx:
        plain = SmtpChannel(host="127.0.0.1", port=rx.port)
        refused = plain.send(Delivery(1, "k0", "email", "a@example.org", "s", "b", "c"))
        assert not refused.ok and len(rx.messages) == 0  # the server requires STARTTLS
        ch = SmtpChannel(
            host="127.0.0.1",
            port=rx.port,
            starttls=True,
            username="noc",
            password="pw",
            ssl_context=client_tls,
        )
        assert ch.send(Delivery(2, "k1", "email", "a@example.org", "s", "b", "c")).ok
        ch.close()
    assert [m.message()["X-Idempotency-Key"] for m in rx.messages] == ["k1"]


def test_incident_notice_series_end_to_end(tmp_path: Path) -> None:
    """Open, update and resolve an incident; the worker renders its templates and mails each customer the
    series, in order, with times in their own time zone."""
    from forewarn.incidents.service import open_incident, post_update, resolve_incident
    from forewarn.state.models import Dependency, Service

    with SmtpReceiver() as rx:
        ctx = make_ctx(tmp_path, port=rx.port)
        with transaction(ctx.engine) as s:
            s.add(Service(id="fiber", name="Fiber internet"))
            s.execute(
                Customer.__table__.insert(),
                [
                    {
                        "id": f"c{i}",
                        "name": f"Ana {i}",
                        "email": f"ana{i}@example.org",
                        "locale": "en",
                        "timezone": "Europe/Brussels" if i % 2 else "America/New_York",
                        "channels": ["email"],
                        "attributes": {},
                    }
                    for i in range(6)
                ],
            )
            s.execute(
                Dependency.__table__.insert(),
                [
                    {"customer_id": f"c{i}", "service_id": "fiber", "region": "gent" if i < 4 else "antwerp"}
                    for i in range(6)
                ],
            )
        t = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
        with transaction(ctx.engine) as s:
            inc = open_incident(
                s,
                title="Fiber outage",
                services=["fiber"],
                regions=["gent"],
                message="No internet in Gent.",
                now=t,
            )
            incident_id = inc.id
        with transaction(ctx.engine) as s:
            post_update(s, incident_id, message="Engineers found a cut cable.", status="identified", now=t)
        with transaction(ctx.engine) as s:
            resolve_incident(s, incident_id, message="Fixed.", now=t)
        w = Worker(ctx, channels={"email": SmtpChannel.from_settings(ctx.settings)})
        for _ in range(10):
            w.run_once(now=datetime(2026, 6, 10, 13, 0, tzinfo=UTC))
        w.close()
    by_rcpt: dict[str, list[Any]] = defaultdict(list)
    for mail in rx.messages:
        by_rcpt[mail.rcpt_tos[0]].append(mail.message())
    assert sorted(by_rcpt) == [f"ana{i}@example.org" for i in range(4)]  # only Gent is affected
    for rcpt, msgs in by_rcpt.items():
        assert len(msgs) == 3
        bodies = [m.get_content() for m in msgs]
        assert "No internet in Gent." in bodies[0]
        assert "cut cable" in bodies[1] and "Fixed." in bodies[2]
        # the update's time (12:00 UTC) in the customer's zone: odd ids live in Brussels, even in New York
        brussels = int(rcpt[3]) % 2 == 1
        assert ("2:00 PM (CEST)" if brussels else "8:00 AM (EDT)") in bodies[1], bodies[1]
        assert len({m["X-Forewarn-Thread"] for m in msgs}) == 1
    assert {r.status for r in statuses(ctx).values()} == {"sent"}
