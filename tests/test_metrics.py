"""Outcome metrics on a small hand-built history where every number is known in advance.

The same history runs on SQLite and on PostgreSQL. The story (period 2026-03-01 .. 2026-03-08, 10 customers,
c1-c6 in segment "home", c7-c10 in "smb"):

- incident 1 starts 03-02 10:00: c1 told at 10:10, c2 at 10:30, c3's notice went dead, c4 suppressed
  (no consent)
- incident 2 starts 03-03 00:00: c5 told at 01:00
- finding 1 (c6's bill): c6 told 03-04 12:00 by playbook bill-shock, which held out c7 and c8 as control and
  decided to notify c10 too (delivery failed, still "notified" by intention to treat)
- contacts: c1 after being told; c2 before and again after; c3 (never told); c6 a day after being told;
  c7 unrelated; c8 twice on "account" within a day and once on "billing"
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from forewarn.measure.metrics import Period, outcome_metrics
from forewarn.state.db import open_store, upgrade
from forewarn.state.models import Customer, Finding, Incident, OutboxMessage, Ticket

Row = dict[str, Any]


def at(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def seed(engine: sa.Engine) -> None:
    customers = [
        {"id": f"c{i}", "segment": "home" if i <= 6 else "smb", "channels": [], "attributes": {}}
        for i in range(1, 11)
    ]
    incidents = [
        {"id": 1, "title": "Fibre outage north", "started_at": at(2, 10)},
        {"id": 2, "title": "Mail delays", "started_at": at(3)},
    ]
    finding = {
        "id": 1,
        "customer_id": "c6",
        "kind": "billing",
        "condition": "billing:shock",
        "score": 3.0,
        "confidence": 0.9,
        "explanation": "your bill is 2.4x your usual",
        "first_detected_at": at(4, 10),
        "last_detected_at": at(4, 10),
    }

    def msg(
        n: int, cust: str, status: str, created: datetime, sent: datetime | None = None, **kw: Any
    ) -> dict:
        return {
            "idempotency_key": f"k{n}",
            "customer_id": cust,
            "channel": "email",
            "topic": "outage",
            "thread_key": f"t{n}",
            "status": status,
            "created_at": created,
            "sent_at": sent,
            "incident_id": kw.get("incident_id"),
            "finding_id": kw.get("finding_id"),
            "playbook": kw.get("playbook"),
            "reason": kw.get("reason"),
        }

    outbox = [
        msg(1, "c1", "sent", at(2, 10, 5), at(2, 10, 10), incident_id=1),
        msg(2, "c2", "sent", at(2, 10, 5), at(2, 10, 30), incident_id=1),
        msg(3, "c3", "dead", at(2, 10, 5), incident_id=1),
        msg(4, "c4", "suppressed", at(2, 10, 5), incident_id=1, reason="no consent"),
        msg(5, "c5", "sent", at(3, 0, 30), at(3, 1), incident_id=2),
        msg(6, "c6", "sent", at(4, 11), at(4, 12), finding_id=1, playbook="bill-shock"),
        msg(7, "c10", "failed", at(4, 11), playbook="bill-shock"),
        msg(8, "c7", "control", at(4, 11), playbook="bill-shock", reason="control group"),
        msg(9, "c8", "control", at(4, 11), playbook="bill-shock", reason="control group"),
        msg(10, "c9", "shadow", at(5), playbook="outage-notice", reason="playbook in shadow mode"),
    ]

    def ticket(n: int, cust: str, opened: datetime, topic: str | None, **kw: Any) -> Row:
        return {
            "external_id": f"e{n}",
            "customer_id": cust,
            "channel": "phone",
            "topic": topic,
            "opened_at": opened,
            "incident_id": kw.get("incident_id"),
            "finding_id": kw.get("finding_id"),
        }

    tickets = [
        ticket(1, "c1", at(2, 11, 10), "outage", incident_id=1),
        ticket(2, "c2", at(2, 10, 20), "outage", incident_id=1),
        ticket(3, "c2", at(2, 12, 30), "outage", incident_id=1),
        ticket(4, "c3", at(2, 11), "outage", incident_id=1),
        ticket(5, "c6", at(5, 12), "billing", finding_id=1),
        ticket(6, "c7", at(6, 9), "billing"),
        ticket(7, "c7", at(25, 9, month=2), "billing"),  # before the period: 9 days before t6, not a repeat
        ticket(8, "c8", at(6, 10), "account"),
        ticket(9, "c8", at(7, 10), "account"),
        ticket(10, "c8", at(7, 11), "billing"),
        ticket(11, "c9", at(8), "account"),  # the period's end is exclusive
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer.__table__), customers)
        conn.execute(sa.insert(Incident.__table__), incidents)
        conn.execute(sa.insert(Finding.__table__), [finding])
        conn.execute(sa.insert(OutboxMessage.__table__), outbox)
        conn.execute(sa.insert(Ticket.__table__), tickets)
        if conn.dialect.name == "postgresql":  # explicit ids above; keep the sequences ahead of them
            conn.execute(sa.text("SELECT setval('incidents_id_seq', 10)"))


class FrameSignals:
    """A signal reader over in-memory frames with the store's read(kind, start, end, customers) contract."""

    def __init__(self, frames: dict[str, pl.DataFrame]) -> None:
        self.frames = frames

    def read(self, kind: str, *, start: Any = None, end: Any = None, customers: Any = None) -> pl.DataFrame:
        df = self.frames[kind]
        if start is not None:
            df = df.filter(pl.col("ts") >= start)
        if end is not None:
            df = df.filter(pl.col("ts") < end)
        if customers is not None:
            df = df.filter(pl.col("customer_id").is_in(list(customers)))
        return df


def signals() -> FrameSignals:
    ts = pl.Datetime("us", "UTC")
    subs = pl.DataFrame(
        {
            "event_id": ["s1", "s2"],
            "customer_id": ["c7", "c6"],
            "ts": [at(10), at(30)],  # c7 churns within 14 days of the decision, c6 long after
            "event_type": ["cancellation", "cancellation"],
        },
        schema_overrides={"ts": ts},
    )
    fb = pl.DataFrame(
        {
            "event_id": ["f1", "f2", "f3", "f4", "f5"],
            "customer_id": ["c6", "c10", "c7", "c1", "c2"],
            "ts": [at(6), at(6), at(7), at(3), at(3)],
            "source": ["survey"] * 5,
            "survey": ["ces", "ces", "ces", "csat", "csat"],
            "rating": [2.0, 4.0, 5.0, 4.0, 2.0],
        },
        schema_overrides={"ts": ts},
    )
    return FrameSignals({"subscription": subs, "feedback": fb})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    upgrade(url)
    eng = open_store(url)
    seed(eng)
    yield eng
    eng.dispose()


PERIOD = Period.parse("2026-03-01", "2026-03-08")


def test_contacts_and_notices(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, PERIOD)
    c = m["contacts"]
    assert (c["customers"], c["total"], c["per_1000"]) == (10, 9, 900.0)
    # every day of the period, zero where nobody got in touch
    assert [(s["bucket"], s["contacts"]) for s in c["series"]] == [
        ("2026-03-01", 0),
        ("2026-03-02", 4),
        ("2026-03-03", 0),
        ("2026-03-04", 0),
        ("2026-03-05", 1),
        ("2026-03-06", 2),
        ("2026-03-07", 2),
    ]
    assert c["series"][1]["per_1000"] == 400.0
    assert m["notices"]["sent"] == 4 and m["notices"]["customers"] == 4
    sent = [(s["bucket"], s["sent"]) for s in m["notices"]["series"] if s["sent"]]
    assert sent == [("2026-03-02", 2), ("2026-03-03", 1), ("2026-03-04", 1)]
    assert len(m["notices"]["series"]) == 7


def test_weekly_buckets_start_on_monday(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, Period.parse("2026-02-20", "2026-03-08"), bucket_size="week")
    assert [(s["bucket"], s["contacts"]) for s in m["contacts"]["series"]] == [
        ("2026-02-16", 0),
        ("2026-02-23", 1),
        ("2026-03-02", 9),
    ]


def test_avoidable_and_repeat_contacts(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, PERIOD)
    assert m["avoidable_contacts"] == {"total": 5, "share": 5 / 9, "before_notice": 2, "after_notice": 3}
    assert m["repeat_contacts"]["total"] == 2
    assert m["repeat_contacts"]["share"] == pytest.approx(2 / 9)


def test_time_to_notify_and_lead_time(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, PERIOD)
    assert m["time_to_notify"] == {"count": 2, "p50_s": pytest.approx(600), "p95_s": pytest.approx(3600)}
    # c1: 1 h, c2: 2 h, c6: 1 day; c5 never called
    assert m["lead_time"] == {"count": 3, "p50_s": pytest.approx(7200), "p95_s": pytest.approx(86400)}


def test_delivery_and_suppressions(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, PERIOD)
    d = m["delivery"]
    assert d["by_status"] == {"pending": 0, "sending": 0, "sent": 4, "failed": 1, "dead": 1}
    assert d["success_rate"] == pytest.approx(0.8)
    assert d["latency_p50_s"] == pytest.approx(1500) and d["latency_p95_s"] == pytest.approx(3600)
    assert m["suppressions"] == [
        {"status": "control", "reason": "control group", "count": 2},
        {"status": "shadow", "reason": "playbook in shadow mode", "count": 1},
        {"status": "suppressed", "reason": "no consent", "count": 1},
    ]


def test_control_groups_with_intervals(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, PERIOD, signals=signals())
    (pb,) = m["control_groups"]  # outage-notice holds out no control group
    assert pb["playbook"] == "bill-shock"
    n, c = pb["notified"], pb["control"]
    assert (n["customers"], n["contacted"], n["contact_rate"]) == (2, 1, 0.5)
    assert (c["customers"], c["contacted"], c["contact_rate"]) == (2, 2, 1.0)
    lo, hi = n["ci95"]
    assert lo == pytest.approx(0.0945, abs=1e-4) and hi == pytest.approx(0.9055, abs=1e-4)  # Wilson 1/2
    assert pb["contact_rate_diff"]["value"] == -0.5
    lo, hi = pb["contact_rate_diff"]["ci95"]
    assert lo < -0.5 < hi < 0.5
    assert (n["churned"], n["churn_rate"]) == (0, 0.0)
    assert (c["churned"], c["churn_rate"]) == (1, 0.5)
    assert pb["churn_diff"]["value"] == -0.5
    assert n["ces"]["answers"] == 2 and n["ces"]["mean"] == 3.0
    assert n["ces"]["ci95"][0] == pytest.approx(3.0 - 1.96 * 1.0, abs=1e-2)  # sd sqrt(2), n 2
    assert c["ces"] == {"answers": 1, "mean": 5.0, "ci95": [None, None]}


def test_surveys(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, PERIOD, signals=signals())
    assert m["surveys"]["csat"] == {"answers": 2, "mean": 3.0}
    assert m["surveys"]["ces"]["answers"] == 3 and m["surveys"]["ces"]["mean"] == pytest.approx(11 / 3)
    assert outcome_metrics(engine, PERIOD)["surveys"]["available"] is False


def test_segments(engine: sa.Engine) -> None:
    smb = outcome_metrics(engine, Period.parse("2026-03-01", "2026-03-08", segment="smb"))
    assert (smb["contacts"]["customers"], smb["contacts"]["total"], smb["contacts"]["per_1000"]) == (
        4,
        4,
        1000.0,
    )
    assert smb["avoidable_contacts"]["total"] == 0 and smb["repeat_contacts"]["total"] == 1
    assert smb["notices"]["sent"] == 0
    assert smb["delivery"]["by_status"]["failed"] == 1 and smb["delivery"]["success_rate"] is None
    home = outcome_metrics(engine, Period.parse("2026-03-01", "2026-03-08", segment="home"))
    assert home["contacts"]["per_1000"] == pytest.approx(833.333)
    assert home["notices"]["sent"] == 4 and home["time_to_notify"]["count"] == 2


def test_empty_period_and_bad_input(engine: sa.Engine) -> None:
    m = outcome_metrics(engine, Period.parse("2025-01-01", "2025-02-01"))
    assert m["contacts"]["total"] == 0 and len(m["contacts"]["series"]) == 31
    assert {s["contacts"] for s in m["contacts"]["series"]} == {0}
    assert m["time_to_notify"] == {"count": 0, "p50_s": None, "p95_s": None}
    assert m["delivery"]["success_rate"] is None and m["control_groups"] == []
    with pytest.raises(ValueError, match="must be after start"):
        Period.parse("2026-03-08", "2026-03-01")
    with pytest.raises(ValueError, match="bucket must be"):
        outcome_metrics(engine, PERIOD, bucket_size="month")
