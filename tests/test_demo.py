"""`forewarn demo --no-serve` end to end on a small simulated company: every stage leaves its mark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forewarn.cli import app


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo") / "home"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--customers",
            "800",
            "--days",
            "90",
            "--seed",
            "3",
            "--backtest-days",
            "10",
            "--home",
            str(home),
            "--no-serve",
        ],
    )
    assert result.exit_code == 0, result.output
    return home


def test_demo_runs_every_stage(demo_home: Path) -> None:
    summary = json.loads((demo_home / "demo-summary.json").read_text())
    assert summary["ingest"]["new"] > 100_000 and summary["ingest"]["rejected"] == 0
    outages = summary["outages"]
    assert outages["incidents"], "the simulated outages were not detected"
    for inc in outages["incidents"]:
        assert inc["status"] == "resolved" and inc["customers_notified"] > 0
    assert outages["linked"] > 0
    assert 0 < outages["avoided"] <= outages["baseline"]
    assert sum(summary["findings"].values()) > 0
    assert summary["playbooks"]["enqueued"] > 0
    assert "overall" not in summary["backtest"] or summary["backtest"]


def test_demo_delivers_to_local_files_and_writes_reports(demo_home: Path) -> None:
    delivered = [
        json.loads(line)
        for f in (demo_home / "deliveries").glob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert delivered, "no message reached a channel"
    keys = [m["id"] for m in delivered]  # the idempotency key
    assert len(keys) == len(set(keys)), "a message was delivered twice"
    assert (
        next((demo_home / "backtests").glob("*.html"))
        .read_text()
        .lstrip()
        .lower()
        .startswith("<!doctype html")
    )


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--home", str(tmp_path), "--no-serve", "--customers", "10"])
    assert result.exit_code != 0
    assert (tmp_path / "precious.txt").exists()


def test_demo_opens_no_incident_for_planned_maintenance(demo_home: Path) -> None:
    """A dip in service health inside an announced maintenance window is the maintenance (the schedule trip
    wire told the customers ahead), not a new incident."""
    from datetime import datetime, timedelta

    import sqlalchemy as sa

    truth = [json.loads(line) for line in (demo_home / "sim" / "ground_truth.jsonl").read_text().splitlines()]
    windows = [t for t in truth if t["type"] == "maintenance"]
    assert windows, "this seed has no planned maintenance: the test would check nothing"
    engine = sa.create_engine(f"sqlite:///{demo_home / 'state.db'}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT i.id, i.started_at, s.service_id, s.region FROM incidents i "
                "JOIN incident_scopes s ON s.incident_id = i.id"
            )
        ).all()
    engine.dispose()
    assert rows, "no incident was opened at all"
    for incident_id, started, service, region in rows:
        started = datetime.fromisoformat(str(started)).replace(tzinfo=None)
        for w in windows:
            start = datetime.fromisoformat(w["start"].rstrip("Z"))
            end = datetime.fromisoformat(w["end"].rstrip("Z"))
            inside = start - timedelta(minutes=30) <= started <= end + timedelta(hours=1)
            assert not (w["service_id"] == service and region in w["regions"] and inside), (
                f"incident {incident_id} on {service}/{region} at {started} is planned maintenance {w['id']}"
            )
