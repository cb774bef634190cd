"""The audit log on both stores: entries round-trip and filter, and the table refuses UPDATE and DELETE."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from forewarn.state import audit
from forewarn.state.db import open_store, transaction, upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    eng = open_store(url)
    yield eng
    eng.dispose()


def test_record_and_filter(engine) -> None:
    with transaction(engine) as s:
        audit.record(s, "token:1", "incident.opened", "incident:1", ip="127.0.0.1", detail={"affected": 3})
        audit.record(s, "user:alice", "incident.resolved", "incident:1", ip="10.0.0.2")
        audit.record(s, audit.cli_actor(), "token.created", "token:2")
    with transaction(engine) as s:
        every = audit.entries(s)
        assert [e.action for e in every] == ["token.created", "incident.resolved", "incident.opened"]
        assert every[2].detail == {"affected": 3} and every[2].at.tzinfo is not None
        assert [e.actor for e in audit.entries(s, target="incident:1", action="incident.resolved")] == [
            "user:alice"
        ]
        assert [e.action for e in audit.entries(s, before_id=every[0].id, limit=1)] == ["incident.resolved"]
        assert every[0].actor.startswith("cli:") and every[0].ip is None


def test_a_change_and_its_entry_roll_back_together(engine) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as s:
        audit.record(s, "token:1", "incident.opened", "incident:9")
        raise RuntimeError("the change failed")
    with transaction(engine) as s:
        assert audit.entries(s) == []


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"]
)
def test_the_log_is_append_only(engine, statement: str) -> None:
    with transaction(engine) as s:
        audit.record(s, "token:1", "incident.opened", "incident:1")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.exec_driver_sql(statement)
    with transaction(engine) as s:
        assert [e.actor for e in audit.entries(s)] == ["token:1"]
