"""Delivery throughput: outbox -> worker -> a local webhook receiver and a local SMTP receiver.

Each figure has a reference measured in the same run: the same number of raw POSTs (the same keep-alive
HTTP/1.1 client, same threads, same body) and raw ``smtplib`` sends (same connections, same message), without
the outbox, the worker, rendering or status bookkeeping. The receivers run in their own processes. The outbox
is filled the way a fan-out fills it (one INSERT .. SELECT, not timed); the timed part is draining it.

    python bench/delivery.py                      # 20k webhook + 10k SMTP messages on SQLite, 3 runs each
    python bench/delivery.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.deliver.channels.base import Delivery
from forewarn.deliver.channels.http1 import HttpConnection
from forewarn.deliver.channels.smtp import SmtpChannel, compose
from forewarn.deliver.channels.webhook import WebhookChannel, payload_for
from forewarn.deliver.outbox import counts_by_status
from forewarn.deliver.receivers import free_port
from forewarn.deliver.worker import Worker
from forewarn.state.db import upgrade

BODY = "Our network is down in your area since 14:05. Engineers are on it; next update within the hour."


def start_receiver(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "forewarn.deliver.receivers", kind, "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "... receiver at ..." once it listens
    return proc, port


class Store:
    """A fresh state store per run: a new SQLite file, or a new database on the PostgreSQL server."""

    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url
        self.admin: sa.Engine | None = None
        self.name = ""

    def new(self, home: Path) -> str:
        if not self.base_url:
            return f"sqlite:///{home / f'state-{uuid.uuid4().hex[:8]}.db'}"
        self.admin = self.admin or sa.create_engine(self.base_url, isolation_level="AUTOCOMMIT")
        self.drop()
        self.name = f"fw_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return sa.engine.make_url(self.base_url).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if self.admin is not None and self.name:
            with self.admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.name = ""


def fill(ctx: Context, n: int, channel: str) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (id, name, email, timezone, locale, channels, attributes, created_at,"
                " updated_at) VALUES (:id, :name, :email, 'UTC', 'en', '[]', '{}', :t, :t)"
            ),
            [
                {"id": f"c{i:07d}", "name": f"Customer {i}", "email": f"c{i}@example.org", "t": "2026-01-01"}
                for i in range(n)
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO outbox (idempotency_key, customer_id, channel, topic, thread_key, priority,"
                " subject, body, payload, status, attempts, next_attempt_at, created_at) "
                f"SELECT 'inc1:u0:' || id, id, '{channel}', 'outage', 'inc1:' || id, 'high', "
                "'Outage in your area', "
                ":body, '{}', 'pending', 0, :t, :t FROM customers"
            ),
            {"t": "2026-01-01 00:00:00", "body": BODY},
        )
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE outbox"))


def drain(url: str, home: Path, n: int, channel: Any, batch: int) -> float:
    upgrade(url)
    ctx = Context(
        Settings(home=home, database_url=url, delivery={"quiet_hours_start": 0, "quiet_hours_end": 0})
    )
    fill(ctx, n, channel.name)
    w = Worker(ctx, channels={channel.name: channel}, worker_id="bench", batch_size=batch)
    t = time.perf_counter()
    w.drain()
    elapsed = time.perf_counter() - t
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in w.timings.items())
    print(f"  {channel.name}: {n} messages in {elapsed:.2f}s; phases: {phases}")
    with ctx.engine.connect() as conn:
        counts = counts_by_status(conn)
    assert counts == {"sent": n}, counts
    ctx.close()
    return elapsed


def sample_delivery(i: int, channel: str) -> Delivery:
    return Delivery(
        i,
        f"inc1:u0:c{i:07d}",
        channel,
        f"c{i}@example.org",
        "Outage in your area",
        BODY,
        f"c{i:07d}",
        "outage",
        f"inc1:c{i:07d}",
        "high",
        1,
    )


def raw_posts(port: int, n: int, threads: int) -> float:
    bodies = [json.dumps(payload_for(sample_delivery(i, "webhook"))).encode() for i in range(n)]

    def run(part: list[bytes]) -> None:
        conn = HttpConnection("http", "127.0.0.1", port)
        for b in part:
            conn.post("/hook", b, {"Content-Type": "application/json"})
        conn.close()

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(run, [bodies[i::threads] for i in range(threads)]))
    return time.perf_counter() - t


def raw_httpx(port: int, n: int) -> float:
    body = json.dumps(payload_for(sample_delivery(0, "webhook"))).encode()
    with httpx.Client() as c:
        t = time.perf_counter()
        for _ in range(n):
            c.post(f"http://127.0.0.1:{port}/hook", content=body)
        return time.perf_counter() - t


def raw_smtp(port: int, n: int, threads: int) -> float:
    raws = [compose(sample_delivery(i, "email"), "noc@isp.example") for i in range(n)]

    def run(part: list[bytes]) -> None:
        s = smtplib.SMTP("127.0.0.1", port)
        for raw in part:
            s.sendmail("noc@isp.example", ["c@example.org"], raw)
        s.quit()

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(run, [raws[i::threads] for i in range(threads)]))
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000, help="webhook messages per run")
    p.add_argument("--smtp-messages", type=int, default=10_000, help="SMTP messages per run")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (medians reported)")
    p.add_argument("--concurrency", type=int, default=4, help="sending threads (webhook); 4 beat 8 here")
    p.add_argument("--smtp-concurrency", type=int, default=4, help="SMTP connections")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--db", default="", help="PostgreSQL server URL (default: a SQLite file)")
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fw-bench-delivery-"))
    store = Store(args.db or None)
    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"store: {'postgresql' if args.db else 'sqlite'}; webhook {args.messages} msgs x {args.runs} runs, "
        f"{args.concurrency} threads; smtp {args.smtp_messages} msgs, {args.smtp_concurrency} connections; "
        f"batch {args.batch_size}"
    )
    figures: dict[str, Any] = {"store": "postgresql" if args.db else "sqlite", "cpus": os.cpu_count()}
    try:
        hook_proc, hook_port = start_receiver("webhook")
        smtp_proc, smtp_port = start_receiver("smtp")
        try:
            raw_posts(hook_port, 500, args.concurrency)  # warm up both ends
            ref, ours = [], []
            for _ in range(args.runs):
                ref.append(args.messages / raw_posts(hook_port, args.messages, args.concurrency))
                ch = WebhookChannel(
                    url=f"http://127.0.0.1:{hook_port}/hook", secret="bench", concurrency=args.concurrency
                )
                ours.append(args.messages / drain(store.new(home), home, args.messages, ch, args.batch_size))
                ch.close()
            httpx_rate = min(args.messages, 3000) / raw_httpx(hook_port, min(args.messages, 3000))
            figures.update(
                webhook_msgs_per_s=round(statistics.median(ours)),
                webhook_raw_posts_per_s=round(statistics.median(ref)),
                webhook_ratio=round(statistics.median(ours) / statistics.median(ref), 3),
                webhook_best_msgs_per_s=round(max(ours)),
                webhook_raw_httpx_sequential_per_s=round(httpx_rate),
            )
            print(
                f"webhook: outbox delivery {statistics.median(ours):,.0f} msgs/s (runs: "
                f"{', '.join(f'{x:,.0f}' for x in ours)}); raw POSTs {statistics.median(ref):,.0f}/s; "
                f"ratio {figures['webhook_ratio']:.2f}; (raw httpx, 1 thread: {httpx_rate:,.0f}/s)"
            )
            ref, ours = [], []
            for _ in range(args.runs):
                ref.append(
                    args.smtp_messages / raw_smtp(smtp_port, args.smtp_messages, args.smtp_concurrency)
                )
                ch = SmtpChannel(
                    host="127.0.0.1",
                    port=smtp_port,
                    sender="noc@isp.example",
                    concurrency=args.smtp_concurrency,
                )
                ours.append(
                    args.smtp_messages / drain(store.new(home), home, args.smtp_messages, ch, args.batch_size)
                )
                opened = ch.connections_opened
                ch.close()
            figures.update(
                smtp_msgs_per_s=round(statistics.median(ours)),
                smtp_raw_sends_per_s=round(statistics.median(ref)),
                smtp_ratio=round(statistics.median(ours) / statistics.median(ref), 3),
                smtp_best_msgs_per_s=round(max(ours)),
                smtp_connections_opened=opened,
            )
            print(
                f"smtp: outbox delivery {statistics.median(ours):,.0f} msgs/s (runs: "
                f"{', '.join(f'{x:,.0f}' for x in ours)}) over {opened} reused connections; raw smtplib "
                f"{statistics.median(ref):,.0f}/s; ratio {figures['smtp_ratio']:.2f}"
            )
        finally:
            hook_proc.terminate()
            smtp_proc.terminate()
    finally:
        store.drop()
    figures["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared: context
    figures["targets_met"] = {
        "webhook_5000": figures["webhook_msgs_per_s"] >= 5000,
        "smtp_1000": figures["smtp_msgs_per_s"] >= 1000,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
