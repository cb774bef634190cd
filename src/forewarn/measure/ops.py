"""Operator metrics in Prometheus text format: queue depth, delivery rate and latency, detector runs, errors.

Each scrape runs a handful of indexed aggregates (outbox by status, the last hour's deliveries), never a scan
of history. Detector run times are recorded in-process by whoever runs the trip wires
(``record_detector_run``) and exported from the same process.

>>> import tempfile
>>> from forewarn.state.db import upgrade, open_store
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
>>> upgrade(url)
>>> record_detector_run("usage", 1.5, findings=3)
>>> text = prometheus_text(open_store(url))
>>> 'forewarn_outbox_messages{status="pending"} 0' in text
True
>>> 'forewarn_detector_last_run_seconds{tripwire="usage"} 1.5' in text
True
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from forewarn.measure.sql import percentiles, seconds_between
from forewarn.measure.views import OUTBOX_STATUSES
from forewarn.state.models import Finding, Incident, OutboxMessage

outbox_t = OutboxMessage.__table__


@dataclass
class _DetectorStats:
    runs: int = 0
    errors: int = 0
    last_seconds: float = 0.0
    total_seconds: float = 0.0
    last_findings: int = 0
    last_run_at: float = 0.0


@dataclass
class _Registry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    detectors: dict[str, _DetectorStats] = field(default_factory=dict)


_REGISTRY = _Registry()


def reset_detector_stats() -> None:
    """Forget every recorded run (the registry is per process; tests start from a clean one)."""
    with _REGISTRY.lock:
        _REGISTRY.detectors.clear()


def record_detector_run(tripwire: str, seconds: float, *, findings: int = 0, error: bool = False) -> None:
    """Record one trip wire run (its wall time, findings written, whether it failed) for ``/metrics``."""
    with _REGISTRY.lock:
        s = _REGISTRY.detectors.setdefault(tripwire, _DetectorStats())
        s.runs += 1
        s.errors += int(error)
        s.last_seconds = seconds
        s.total_seconds += seconds
        s.last_findings = findings
        s.last_run_at = time.time()


def record_run_report(report: Any) -> None:
    """Record every trip wire of a ``forewarn.detect.runner.RunReport`` (skipped ones are left out)."""
    for w in report.wires:
        if w.status != "skipped":
            record_detector_run(w.name, w.seconds, findings=w.firing, error=w.status == "error")


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str) -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float | int | None, **labels: str) -> None:
        if value is None:
            return
        lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def prometheus_text(engine: sa.Engine, *, now: datetime | None = None) -> str:
    """The ``/metrics`` body."""
    now = now or datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    o = outbox_t
    w = _Writer()
    with engine.connect() as conn:
        by_status = {s: 0 for s in OUTBOX_STATUSES}
        by_status |= {
            str(s): int(n)
            for s, n in conn.execute(sa.select(o.c.status, sa.func.count()).group_by(o.c.status))
        }
        due = conn.execute(
            sa.select(sa.func.count()).where(
                o.c.status.in_(("pending", "failed")), o.c.next_attempt_at <= now
            )
        ).scalar_one()
        recent = sa.and_(o.c.sent_at >= hour_ago, o.c.sent_at <= now)
        sent_hour = conn.execute(
            sa.select(o.c.channel, sa.func.count()).where(recent).group_by(o.c.channel)
        ).all()
        lat = (
            sa.select(seconds_between(o.c.sent_at, o.c.created_at, conn.dialect.name).label("s"))
            .where(recent, o.c.status == "sent")
            .subquery()
        )
        lat_p = percentiles(conn, lat.c.s, (0.5, 0.95, 0.99))
        errors = conn.execute(
            sa.select(o.c.status, sa.func.count())
            .where(o.c.status.in_(("failed", "dead")), o.c.last_error.is_not(None))
            .group_by(o.c.status)
        ).all()
        open_incidents = conn.execute(
            sa.select(sa.func.count()).where(Incident.__table__.c.resolved_at.is_(None))
        ).scalar_one()
        open_findings = conn.execute(
            sa.select(sa.func.count()).where(Finding.__table__.c.status == "open")
        ).scalar_one()

    w.family(
        "forewarn_outbox_messages", "gauge", "Outbox messages by status (queue depth for pending/failed)."
    )
    for s, n in by_status.items():
        w.sample("forewarn_outbox_messages", n, status=s)
    w.family("forewarn_outbox_due", "gauge", "Messages due for a delivery attempt now.")
    w.sample("forewarn_outbox_due", int(due))
    w.family("forewarn_delivered_last_hour", "gauge", "Messages delivered in the last hour, by channel.")
    for ch, n in sent_hour:
        w.sample("forewarn_delivered_last_hour", int(n), channel=ch)
    w.family("forewarn_delivery_rate_per_second", "gauge", "Deliveries per second over the last hour.")
    w.sample("forewarn_delivery_rate_per_second", round(sum(int(n) for _, n in sent_hour) / 3600, 6))
    w.family(
        "forewarn_delivery_latency_seconds",
        "summary",
        "Enqueue to delivery, messages delivered in the last hour.",
    )
    for q, v in lat_p.items():
        w.sample("forewarn_delivery_latency_seconds", None if v is None else round(v, 3), quantile=str(q))
    w.sample("forewarn_delivery_latency_seconds_count", sum(int(n) for _, n in sent_hour))
    w.family(
        "forewarn_delivery_errors", "gauge", "Messages whose last attempt failed, by status (failed, dead)."
    )
    for s in ("failed", "dead"):
        w.sample("forewarn_delivery_errors", dict(errors).get(s, 0), status=s)
    w.family("forewarn_incidents_open", "gauge", "Incidents not yet resolved.")
    w.sample("forewarn_incidents_open", int(open_incidents))
    w.family("forewarn_findings_open", "gauge", "Open findings.")
    w.sample("forewarn_findings_open", int(open_findings))

    with _REGISTRY.lock:
        detectors = {k: _DetectorStats(**vars(v)) for k, v in _REGISTRY.detectors.items()}
    w.family("forewarn_detector_last_run_seconds", "gauge", "Wall time of the latest run of each trip wire.")
    for name, s in detectors.items():
        w.sample("forewarn_detector_last_run_seconds", round(s.last_seconds, 6), tripwire=name)
    w.family("forewarn_detector_runs_total", "counter", "Trip wire runs recorded by this process.")
    for name, s in detectors.items():
        w.sample("forewarn_detector_runs_total", s.runs, tripwire=name)
    w.family("forewarn_detector_run_seconds_total", "counter", "Total trip wire run time in this process.")
    for name, s in detectors.items():
        w.sample("forewarn_detector_run_seconds_total", round(s.total_seconds, 6), tripwire=name)
    w.family("forewarn_detector_errors_total", "counter", "Trip wire runs that failed.")
    for name, s in detectors.items():
        w.sample("forewarn_detector_errors_total", s.errors, tripwire=name)
    w.family(
        "forewarn_detector_last_findings", "gauge", "Findings written by the latest run of each trip wire."
    )
    for name, s in detectors.items():
        w.sample("forewarn_detector_last_findings", s.last_findings, tripwire=name)
    return w.text()
