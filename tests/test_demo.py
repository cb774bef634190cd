"""`forewarn demo --no-serve` end to end on a small simulated company: every stage leaves its mark."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from forewarn.cli import app


class LogCapture(logging.Handler):
    """Every log line (with its traceback, if any) as a handler would write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The demo run, with everything it logged (all loggers at DEBUG, SQLAlchemy's statements at INFO) and
    its printed output."""
    capture = LogCapture()
    root, engine_log = logging.getLogger(), logging.getLogger("sqlalchemy.engine")
    levels = root.level, engine_log.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    engine_log.setLevel(logging.INFO)
    try:
        home = _run_demo(tmp_path_factory)
    finally:
        root.removeHandler(capture)
        root.setLevel(levels[0])
        engine_log.setLevel(levels[1])
    return home[0], "\n".join(capture.lines), home[1]


@pytest.fixture(scope="module")
def demo_home(demo_run: tuple[Path, str, str]) -> Path:
    return demo_run[0]


def _run_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
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
    return home, result.output


def test_demo_logs_hold_no_contact_details_or_message_bodies(demo_run: tuple[Path, str, str]) -> None:
    home, logs, printed = demo_run
    # the capture saw the whole run, SQL included, with the statements' parameters hidden
    assert "INSERT INTO outbox" in logs and "parameters hidden" in logs, logs[:2000]
    engine = sa.create_engine(f"sqlite:///{home / 'state.db'}")
    with engine.connect() as conn:
        contacts = conn.execute(sa.text("SELECT email, phone FROM customers")).all()
        bodies = conn.scalars(sa.text("SELECT DISTINCT body FROM outbox WHERE length(body) > 20")).all()
        texts = conn.scalars(sa.text("SELECT DISTINCT text FROM tickets WHERE length(text) > 20")).all()
    engine.dispose()
    details = [v for row in contacts for v in row if v]
    assert len(details) > 1000 and bodies and texts
    leaked = [v for v in details if v in logs or v in printed]
    assert leaked == [], f"{len(leaked)} email addresses / phone numbers in the logs, e.g. {leaked[:3]}"
    assert [b for b in bodies if b in logs] == [], "a message body is in the logs"
    assert [t for t in texts if t in logs] == [], "an inbound contact's text is in the logs"


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
