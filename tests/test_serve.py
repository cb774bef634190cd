"""`forewarn serve` runs the configured uptime monitors beside the API."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from forewarn.cli.serve import start_monitors
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.state.models import Incident
from incident_helpers import seed_isp


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    return port


def test_serve_runs_the_monitors_file(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "monitors.yaml"
    path.write_text(
        "monitors:\n"
        f"  - name: tv-head-end\n    type: tcp\n    host: 127.0.0.1\n    port: {_closed_port()}\n"
        "    service: tv\n    interval_s: 0.2\n    timeout_s: 0.5\n    failures_to_open: 2\n"
    )
    ctx = Context(settings.model_copy(update={"monitors_file": path}))
    seed_isp(ctx.engine)
    started = start_monitors(ctx)
    assert started is not None and started[1] == 1
    stop, _ = started
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with ctx.engine.connect() as conn:
                opened = conn.execute(sa.select(Incident.title, Incident.source)).all()
            if opened:
                break
            time.sleep(0.1)
        assert len(opened) == 1 and opened[0].source == "monitor"
    finally:
        stop.set()
        ctx.close()


def test_serve_without_monitors_file_starts_none(ctx: Context) -> None:
    assert start_monitors(ctx) is None


def test_a_bad_monitors_file_fails_before_serving(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "monitors.yaml"
    path.write_text("monitors:\n  - name: x\n    type: tcp\n    host: h\n    port: 99999\n    service: s\n")
    ctx = Context(settings.model_copy(update={"monitors_file": path}))
    with pytest.raises(ValueError, match="port"):
        start_monitors(ctx)


def test_serve_runs_the_live_loop_when_an_interval_is_set(settings: Settings) -> None:
    from datetime import timedelta

    from forewarn.cli.serve import start_cycle

    assert start_cycle(Context(settings)) is None  # off unless asked for
    ctx = Context(settings.model_copy(update={"cycle_every": timedelta(milliseconds=100)}))
    runner = start_cycle(ctx)
    assert runner is not None
    try:
        deadline = time.monotonic() + 30
        while runner.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.passes >= 2
    finally:
        runner.stop()
        ctx.close()
