"""Crash safety: a worker process delivering a fan-out is SIGKILLed at random moments and restarted; every
message still reaches the receiver at least once, and exactly once after dropping duplicates by
idempotency key.

The fast variant (a few thousand messages, two kills) runs by default; the 100k-message drill with five kills
is ``-m slow`` (on SQLite, and on PostgreSQL when a server is there). Each prints what the receiver saw:
``python -m pytest tests/test_worker_crash.py -m slow -s``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from forewarn.deliver.outbox import TABLE, counts_by_status
from forewarn.deliver.receivers import WebhookReceiver
from forewarn.state.db import open_store, upgrade

WORKER = [sys.executable, "-c", "from forewarn.cli import main; main()", "worker"]


def _fan_out(engine: sa.Engine, n: int) -> None:
    """n customers and one notice each, enqueued the way a fan-out does it: one INSERT .. SELECT."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (id, name, timezone, locale, channels, attributes, created_at, "
                "updated_at) "
                "VALUES (:id, :name, 'UTC', 'en', '[]', '{}', :t, :t)"
            ),
            [{"id": f"c{i:06d}", "name": f"Customer {i}", "t": "2026-01-01 00:00:00"} for i in range(n)],
        )
        conn.execute(
            sa.text(
                "INSERT INTO outbox (idempotency_key, customer_id, channel, topic, thread_key, priority,"
                " subject, body, payload, status, attempts, next_attempt_at, created_at) "
                "SELECT 'inc1:u0:' || id, id, 'webhook', 'outage', 'inc1:' || id, 'high', 'Outage', "
                "'Our network is down in your area; we are on it.', '{}', 'pending', 0, :t, :t FROM customers"
            ),
            {"t": "2026-01-01 00:00:00"},
        )


def crash_drill(tmp_path: Path, url: str, n: int, kills: int, seed: int = 7) -> dict[str, Any]:
    upgrade(url)
    engine = open_store(url)
    _fan_out(engine, n)
    rng = random.Random(seed)
    env = {
        **os.environ,
        "FOREWARN_HOME": str(tmp_path),
        "FOREWARN_DATABASE_URL": url,
        "FOREWARN_WEBHOOK__SECRET": "drill",
        "FOREWARN_DELIVERY__QUIET_HOURS_START": "0",
        "FOREWARN_DELIVERY__QUIET_HOURS_END": "0",
        "FOREWARN_DELIVERY__MAX_ATTEMPTS": "20",
        "FOREWARN_DELIVERY__BATCH_SIZE": "500",
    }
    args = ["--lease-s", "5", "--poll-s", "0.1", "--concurrency", "4", "--id"]
    killed_at: list[dict[str, Any]] = []
    started = time.monotonic()
    with WebhookReceiver(record=False) as rx:
        env["FOREWARN_WEBHOOK__URL"] = rx.url
        for k in range(kills):
            proc = subprocess.Popen(
                [*WORKER, *args, f"w{k}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            # a random moment once the worker has started delivering (import + connect takes ~1 s here)
            before = rx.count
            deadline = time.monotonic() + 30
            while rx.count == before and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 1.5))
            assert proc.poll() is None, f"worker exited early: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            with engine.connect() as conn:
                killed_at.append({"received": rx.count, **counts_by_status(conn)})
        proc = subprocess.Popen(
            [*WORKER, *args, "final"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + max(120, n / 200)
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    counts = counts_by_status(conn)
                if counts.get("sent", 0) == n:
                    break
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        keys = rx.keys()
    elapsed = time.monotonic() - started
    with engine.connect() as conn:
        expected = {r[0] for r in conn.execute(sa.select(TABLE.c.idempotency_key))}
        counts = counts_by_status(conn)
        max_attempts = conn.execute(sa.select(sa.func.max(TABLE.c.attempts))).scalar()
    engine.dispose()
    unique = set(keys)
    figures = {
        "messages": n,
        "kills": kills,
        "requests_received": len(keys),
        "unique_keys": len(unique),
        "duplicates": len(keys) - len(unique),
        "lost": len(expected - unique),
        "unexpected": len(unique - expected),
        "outbox": counts,
        "max_attempts": max_attempts,
        "seconds": round(elapsed, 1),
        "at_kills": killed_at,
    }
    print("crash drill:", json.dumps(figures))
    assert figures["lost"] == 0 and figures["unexpected"] == 0, figures
    assert unique == expected and counts == {"sent": n}, figures
    assert len(keys) >= n
    return figures


def test_sigkill_fast(tmp_path: Path) -> None:
    figures = crash_drill(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", n=4000, kills=2)
    # each kill interrupts at most the batch in flight (500 messages): duplicates are bounded by that
    assert figures["duplicates"] <= 2 * 500


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_100k_sqlite(tmp_path: Path) -> None:
    crash_drill(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", n=100_000, kills=5)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_sigkill_100k_postgres(tmp_path: Path, pg_url: str) -> None:
    crash_drill(tmp_path, pg_url, n=100_000, kills=5)
