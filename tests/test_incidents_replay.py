"""Replaying a simulated company's service health through detection, notices, delivery and the link."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.deliver.channels.console import FileChannel
from forewarn.deliver.worker import Worker
from forewarn.measure.replay import replay_outages
from forewarn.signals.ingest import ingest_paths
from forewarn.sim.config import SimConfig
from forewarn.sim.world import simulate
from forewarn.state.db import upgrade


@pytest.mark.slow
def test_replay_simulated_outages(tmp_path: Path) -> None:
    world = simulate(SimConfig(customers=1000, days=90, seed=1), tmp_path / "world")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    ctx = Context(
        Settings(home=tmp_path, database_url=url, delivery={"quiet_hours_start": 0, "quiet_hours_end": 0})
    )
    assert ingest_paths(ctx, [tmp_path / "world"]).ok
    channels = {ch: FileChannel(tmp_path / f"{ch}.jsonl") for ch in ("email", "sms", "push", "chat")}
    worker = Worker(ctx, channels=channels)
    result = replay_outages(ctx, worker=worker, truth=world.truth, link_every=timedelta(minutes=15))
    worker.close()
    disruptions = world.truth.filter(world.truth["type"].is_in(["outage", "maintenance"])).height
    assert len(result.incidents) == disruptions > 0
    for inc in result.incidents:
        assert inc["status"] == "resolved" and inc["affected"] > 0
        assert inc["notified"]["sent"] > 0 and inc["time_to_first_delivered_s"]["p50"] == 60.0
        assert inc["contacts_avoided"] is not None
    avoided = sum(i["contacts_avoided"]["avoided"] for i in result.incidents)
    baseline = sum(i["contacts_avoided"]["contacts_without_notices"] for i in result.incidents)
    assert 0 < avoided < baseline
    assert result.linked == sum(i["tickets_linked"] for i in result.incidents) > 0
    ctx.close()
