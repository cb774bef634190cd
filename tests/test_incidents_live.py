"""Live passes over service signals read only recent history, and open and resolve exactly the incidents a
replay of all history does."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from forewarn.config import Settings
from forewarn.context import Context
from forewarn.incidents.from_signals import ServiceParams, read_start, sync_from_signals
from forewarn.signals.ingest import ingest_paths
from forewarn.sim.config import SimConfig
from forewarn.sim.world import simulate
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Incident

LOOKBACK = timedelta(days=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("world")
    return out, simulate(SimConfig(customers=300, days=60, seed=5), out)


def _store(tmp_path: Path, name: str, out: Path) -> Context:
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    upgrade(url)
    ctx = Context(Settings(home=tmp_path / name, database_url=url))
    assert ingest_paths(ctx, [out]).ok
    return ctx


def _incidents(ctx: Context) -> set[tuple]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Incident.external_key, Incident.started_at, Incident.resolved_at, Incident.status)
        ).all()
    return {tuple(r) for r in rows}


@pytest.mark.parametrize("lookback", [LOOKBACK, timedelta(minutes=30)])
def test_live_passes_match_a_replay_of_all_history(tmp_path: Path, world, lookback: timedelta) -> None:
    # (with a 30-minute lookback, passes inside an outage depend on reading back to the incident's start)
    out, sim = world
    disruptions = sim.truth.filter(pl.col("type").is_in(["outage", "maintenance"]))
    assert disruptions.height > 0
    live, replay = _store(tmp_path, "live", out), _store(tmp_path, "replay", out)
    # passes every 20 minutes from an hour before each disruption to two hours after it
    passes: list[datetime] = []
    for row in disruptions.iter_rows(named=True):
        t = row["start"] - timedelta(hours=1)
        while t <= row["end"] + timedelta(hours=2):
            passes.append(t)
            t += timedelta(minutes=20)
    for t in sorted(set(passes)):
        sync_from_signals(live, as_of=t, since=t - lookback)
    sync_from_signals(replay, as_of=sim.config.end)  # all history, every event at its own time
    replayed = _incidents(replay)
    covered = {i for i in replayed if any(i[1] <= t and (i[2] is None or t >= i[2]) for t in passes)}
    assert covered and _incidents(live) == covered
    live.close()
    replay.close()


def test_the_read_starts_before_every_incident_a_pass_can_still_touch(tmp_path: Path, world) -> None:
    out, sim = world
    ctx = _store(tmp_path, "s", out)
    p = ServiceParams()
    now = sim.config.end
    with transaction(ctx.engine) as s:
        calm = read_start(s, now - LOOKBACK, p)
    assert now - LOOKBACK - timedelta(days=2) < calm < now - LOOKBACK  # the baseline's reach and a margin
    sync_from_signals(ctx, as_of=now)  # replay: incidents exist, all resolved long before ``now``
    with transaction(ctx.engine) as s:
        assert read_start(s, now - LOOKBACK, p) == calm  # resolved long ago: no reason to read further back
        inc = s.scalars(sa.select(Incident).order_by(Incident.started_at)).first()
        inc.status, inc.resolved_at = "identified", None  # one still open
    with transaction(ctx.engine) as s:
        assert read_start(s, now - LOOKBACK, p) < inc.started_at
    ctx.close()
