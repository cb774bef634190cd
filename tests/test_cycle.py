"""The live loop: one pass runs every stage on real stores, a second pass duplicates nothing, a failing stage
does not stop the others, and the timer repeats passes until stopped."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from forewarn.cli import app
from forewarn.config import Settings, get_settings
from forewarn.context import Context
from forewarn.cycle import CycleRunner, run_cycle
from forewarn.decide.engine import settle_held
from forewarn.demo import examples_dir
from forewarn.measure.ops import prometheus_text, reset_detector_stats
from forewarn.signals.ingest import ingest_paths
from forewarn.sim.config import SimConfig
from forewarn.sim.world import simulate
from forewarn.state.db import upgrade
from forewarn.state.models import Finding, OutboxMessage


def _counts(ctx: Context) -> tuple[int, int]:
    with ctx.engine.connect() as conn:
        findings = conn.execute(sa.select(sa.func.count()).select_from(Finding)).scalar_one()
        outbox = conn.execute(sa.select(sa.func.count()).select_from(OutboxMessage)).scalar_one()
    return findings, outbox


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("world")
    return out, simulate(SimConfig(customers=300, days=90, seed=5), out)


@pytest.fixture
def live(tmp_path: Path, world: tuple[Path, object]) -> Context:
    out, sim = world
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=tmp_path, database_url=url))
    assert ingest_paths(ctx, [out]).ok
    shutil.copytree(examples_dir(), tmp_path / "playbooks")
    yield ctx
    ctx.close()


def _end(world: tuple[Path, object]) -> datetime:
    return world[1].config.end - timedelta(hours=1)


def test_a_pass_runs_every_stage_and_a_second_pass_adds_nothing(live: Context, world) -> None:
    now = _end(world)
    reset_detector_stats()
    first = run_cycle(live, now)
    assert first.ok, first.to_dict()
    by_name = {s.name: s for s in first.stages}
    assert list(by_name) == ["detect", "incidents", "link", "decide", "digests"]
    assert by_name["detect"].detail["opened"] > 0
    assert by_name["decide"].detail["playbooks"]["findings"] > 0
    findings, outbox = _counts(live)
    assert findings == by_name["detect"].detail["opened"] and outbox > 0

    again = run_cycle(live, now)
    assert again.ok
    metrics = prometheus_text(live.engine)  # what the serve process exports: each trip wire ran twice
    assert 'forewarn_detector_runs_total{tripwire="usage"} 2' in metrics
    assert {s.name: s for s in again.stages}["detect"].detail["opened"] == 0
    assert _counts(live) == (findings, outbox)  # same data, same time: nothing new, nothing twice


def _incident_rows(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        q = (
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.incident_id.is_not(None))
        )
        return conn.execute(q).scalar_one()


def test_history_is_recorded_not_announced_and_a_live_outage_is(live: Context, world) -> None:
    # a loop started on a store full of history: outages over for weeks and old contacts are not announced
    run_cycle(live, _end(world), ("incidents", "link"))
    assert _incident_rows(live) == 0
    # at a moment inside a simulated outage, the same pass opens the incident and queues its notices
    outage = world[1].truth.filter(pl.col("type") == "outage").sort("start").row(0, named=True)
    report = run_cycle(live, outage["start"] + (outage["end"] - outage["start"]) / 2, ("incidents",))
    assert report.stages[0].summary.startswith("1 opened"), report.to_dict()
    assert _incident_rows(live) > 0


def test_a_failing_stage_is_reported_and_the_others_still_run(live: Context, world) -> None:
    (live.settings.playbooks_path / "broken.yaml").write_text("playbooks:\n  - name: x\n    when: 42\n")
    report = run_cycle(live, _end(world))
    status = {s.name: s.status for s in report.stages}
    assert (
        status["decide"] == "error" and "broken.yaml" in {s.name: s for s in report.stages}["decide"].summary
    )
    assert status["detect"] == status["incidents"] == status["link"] == "ok"
    assert not report.ok


def test_without_playbooks_the_decisions_are_skipped(ctx: Context) -> None:
    report = run_cycle(ctx)
    decide = next(s for s in report.stages if s.name == "decide")
    # where it looked, and how to point it elsewhere
    assert str(ctx.settings.playbooks_path) in decide.summary and "FOREWARN_PLAYBOOKS_PATH" in decide.summary
    assert "forewarn run playbooks/" in decide.summary
    status = {s.name: s.status for s in report.stages}
    assert status == {
        "detect": "ok",
        "incidents": "ok",
        "link": "ok",
        "decide": "skipped",
        "digests": "skipped",
    }


def test_the_runner_repeats_passes_until_stopped(ctx: Context) -> None:
    reports = []
    runner = CycleRunner(ctx, timedelta(milliseconds=50), on_report=reports.append, stages=("link",))
    runner.start()
    deadline = time.monotonic() + 20
    while len(reports) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.stop()
    passes = runner.passes
    time.sleep(0.2)
    assert runner.passes == passes  # stopped means stopped
    assert len(reports) >= 3 and all(r.ok and [s.name for s in r.stages] == ["link"] for r in reports)
    with pytest.raises(ValueError, match="positive"):
        CycleRunner(ctx, timedelta(0))


def test_cli_run_prints_one_json_line_per_pass(tmp_path: Path, world, monkeypatch) -> None:
    monkeypatch.setenv("FOREWARN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FOREWARN_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        empty = runner.invoke(app, ["run", "--json", "--now", _end(world).isoformat(), "--stage", "detect"])
        assert empty.exit_code == 1 and "forewarn ingest" in str(empty.exception or empty.output)
        usage = world[0] / "usage.parquet"
        assert runner.invoke(app, ["ingest", str(usage), "--unknown-customers", "create"]).exit_code == 0
        result = runner.invoke(app, ["run", "--json", "--now", _end(world).isoformat(), "--stage", "detect"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert [s["name"] for s in report["stages"]] == ["detect"] and report["ok"]
    bad = runner.invoke(app, ["run", "--stage", "nope"])
    assert bad.exit_code != 0 and "unknown" in bad.output
    both = runner.invoke(app, ["run", "--every", "1m", "--now", "2026-01-01T00:00:00"])
    assert both.exit_code != 0


def test_settings_read_the_interval(monkeypatch) -> None:
    monkeypatch.setenv("FOREWARN_CYCLE_EVERY", "1h")
    assert Settings(home="/tmp/fw-cycle").cycle_every == timedelta(hours=1)
    with pytest.raises(ValueError, match="duration"):
        Settings(home="/tmp/fw-cycle", cycle_every="soon")


def test_a_feed_that_stopped_is_reported_not_sent_to_every_customer(live: Context, world) -> None:
    later = _end(world) + timedelta(days=5)  # five days without a usage or telemetry reading
    report = run_cycle(live, later, ("detect",))
    [detect] = report.stages
    assert detect.status == "error" and "usage: newest reading" in detect.summary and not report.ok
    assert _counts(live) == (0, 0)  # nobody was judged "silent" for data that did not arrive
    live.settings.max_signal_lag = None  # the check is a setting: off, the wires judge as of ``later``
    assert run_cycle(live, later, ("detect",)).stages[0].detail["opened"] > 0


def test_the_circuit_breaker_holds_a_mass_send_for_approval(live: Context, world) -> None:
    # a feed that stopped, with the staleness check off: customers look silent; a playbook that would tell
    # more of them than its limit in one run is held as a whole, not sent (a low limit for this small world)
    (live.settings.playbooks_path / "silent.yaml").write_text(
        "guardrails:\n  mass_send: {share: 0.001, minimum: 2}\n"
        "playbooks:\n  - name: silent-notice\n    mode: live\n"
        "    when: {kind: usage, condition: 'usage:silent:*'}\n"
        "    then:\n      - notify: {channels: [email, sms], template: playbook_usage}\n"
    )
    for other in live.settings.playbooks_path.glob("*.yaml"):
        if other.name != "silent.yaml":
            other.unlink()
    live.settings.max_signal_lag = None
    report = run_cycle(live, _end(world) + timedelta(days=5), ("detect", "decide"))
    assert report.ok, report.to_dict()
    with live.engine.connect() as conn:
        rows = conn.execute(
            sa.select(OutboxMessage.status, OutboxMessage.reason).where(
                OutboxMessage.playbook == "silent-notice"
            )
        ).all()
    assert len(rows) > 2
    assert {status for status, _ in rows} <= {"held", "suppressed", "control"}
    assert any(status == "held" and reason.startswith("circuit breaker") for status, reason in rows)
    # a person settles the whole run at once: approved rows go out when due, the old reason kept
    held_n = sum(status == "held" for status, _ in rows)
    assert settle_held(live, "silent-notice", approve_all=True) == held_n
    with live.engine.connect() as conn:
        released = (
            conn.execute(sa.select(OutboxMessage.reason).where(OutboxMessage.status == "pending"))
            .scalars()
            .all()
        )
    assert len(released) == held_n and all(r.startswith("approved (was: circuit breaker") for r in released)
    assert settle_held(live, "silent-notice", approve_all=False) == 0  # nothing held any more
    # the same run with the limit above it sends as usual
    (live.settings.playbooks_path / "silent.yaml").write_text(
        (live.settings.playbooks_path / "silent.yaml").read_text().replace("minimum: 2", "minimum: 50")
    )
    with live.engine.begin() as conn:
        conn.execute(sa.delete(OutboxMessage))
    run_cycle(live, _end(world) + timedelta(days=5), ("decide",))
    with live.engine.connect() as conn:
        statuses = conn.execute(sa.select(OutboxMessage.status)).scalars().all()
    assert "held" not in statuses and "pending" in statuses


def test_cli_run_takes_the_playbooks_folder(tmp_path: Path, world, monkeypatch) -> None:
    """`forewarn run playbooks/` (or --playbooks) decides with that folder instead of skipping."""
    monkeypatch.setenv("FOREWARN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FOREWARN_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    folder = tmp_path / "playbooks"
    shutil.copytree(examples_dir(), folder)
    runner = CliRunner()
    now = _end(world).isoformat()
    try:
        assert runner.invoke(app, ["ingest", str(world[0])]).exit_code == 0
        skipped = runner.invoke(app, ["run", "--now", now, "--stage", "decide"])
        given = runner.invoke(app, ["run", str(folder), "--now", now, "--stage", "decide"])
        option = runner.invoke(app, ["run", "--playbooks", str(folder), "--now", now, "--stage", "decide"])
        missing = runner.invoke(app, ["run", str(tmp_path / "nope"), "--now", now])
    finally:
        get_settings.cache_clear()
    assert "skipped" in skipped.output and "FOREWARN_PLAYBOOKS_PATH" in " ".join(skipped.output.split())
    for result in (given, option):
        assert result.exit_code == 0, result.output
        decide = next(line for line in result.output.splitlines() if "decide" in line)
        assert "queued" in decide and "skipped" not in decide
    assert missing.exit_code == 1 and "no such playbook file or folder" in str(missing.exception)
