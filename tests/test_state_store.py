"""The state store contract: one suite, run on every backend (SQLite here, PostgreSQL below).

Each backend subclasses ``StateStoreContract`` and provides the ``url`` fixture, so both pass the very
same tests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from forewarn.state.db import (
    SchemaOutOfDate,
    downgrade,
    make_engine,
    open_store,
    schema_status,
    transaction,
    upgrade,
)
from forewarn.state.models import (
    AffectedCustomer,
    Consent,
    Customer,
    Dependency,
    Finding,
    Incident,
    IncidentScope,
    IncidentUpdate,
    OutboxMessage,
    Service,
    Ticket,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StateStoreContract:
    @pytest.fixture
    def url(self) -> str:  # pragma: no cover - overridden per backend
        raise NotImplementedError

    @pytest.fixture
    def engine(self, url: str):
        upgrade(url)
        engine = open_store(url)
        yield engine
        engine.dispose()

    def _customer(self, session, cid: str = "c1", **kw) -> Customer:
        c = Customer(id=cid, name="Ada", email=f"{cid}@example.com", timezone="Europe/Berlin", **kw)
        session.add(c)
        return c

    def test_fresh_database_is_reported_not_used(self, url: str) -> None:
        engine = make_engine(url)
        status = schema_status(engine)
        engine.dispose()
        assert status.database is None and not status.current
        with pytest.raises(SchemaOutOfDate, match="forewarn db upgrade"):
            open_store(url)

    def test_the_embedded_store_migrates_itself_a_server_database_does_not(self, url: str) -> None:
        if url.startswith("sqlite"):  # SQLite: created and migrated on first use, as embedded stores are
            engine = open_store(url, migrate=True)
            assert schema_status(engine).current
            engine.dispose()
        else:  # PostgreSQL: never migrated behind its operator's back
            with pytest.raises(SchemaOutOfDate, match="forewarn db upgrade"):
                open_store(url, migrate=True)
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:  # a revision this code does not know (a newer forewarn): refused
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'from-the-future'"))
        engine.dispose()
        with pytest.raises(SchemaOutOfDate, match="from-the-future"):
            open_store(url, migrate=True)

    def test_upgrade_makes_schema_current_and_is_repeatable(self, url: str) -> None:
        upgrade(url)
        upgrade(url)  # a second upgrade is a no-op
        engine = open_store(url)
        assert schema_status(engine).current
        engine.dispose()

    def test_out_of_date_schema_is_refused(self, url: str) -> None:
        upgrade(url)
        upgrade_engine = make_engine(url)
        with upgrade_engine.begin() as conn:  # pretend the database is at an older revision
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'older'"))
        upgrade_engine.dispose()
        with pytest.raises(SchemaOutOfDate, match="revision older"):
            open_store(url)

    def test_customer_roundtrip_with_consent_and_attributes(self, engine) -> None:
        with transaction(engine) as s:
            c = self._customer(
                s, attributes={"plan_limit_gb": 200, "tags": ["vip"]}, channels=["sms", "email"]
            )
            c.consents.append(Consent(channel="email", topic="*", granted=True))
            c.consents.append(Consent(channel="email", topic="marketing", granted=False))
        with transaction(engine) as s:
            c = s.get(Customer, "c1")
            assert c.attributes == {"plan_limit_gb": 200, "tags": ["vip"]}
            assert c.channels == ["sms", "email"]
            assert {(x.topic, x.granted) for x in c.consents} == {("*", True), ("marketing", False)}
            assert c.created_at.tzinfo is not None

    def test_times_come_back_utc_aware(self, engine) -> None:
        with transaction(engine) as s:
            s.add(Incident(title="x", started_at=T0))
        with transaction(engine) as s:
            inc = s.scalars(sa.select(Incident)).one()
            assert inc.started_at == T0 and inc.started_at.utcoffset() == timedelta(0)

    def test_foreign_keys_are_enforced(self, engine) -> None:
        with pytest.raises(IntegrityError), transaction(engine) as s:
            s.add(Dependency(customer_id="nobody", service_id="nothing", region="north"))
        with transaction(engine) as s:  # nothing half-applied
            assert s.scalar(sa.select(sa.func.count()).select_from(Dependency)) == 0

    def test_deleting_a_customer_cascades(self, engine) -> None:
        with transaction(engine) as s:
            self._customer(s)
            s.add(Service(id="broadband", name="Broadband"))
            s.flush()
            s.add(Dependency(customer_id="c1", service_id="broadband", region="north"))
            s.add(Consent(customer_id="c1", channel="sms", topic="*", granted=True))
        with transaction(engine) as s:
            s.execute(sa.delete(Customer).where(Customer.id == "c1"))
        with transaction(engine) as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Dependency)) == 0
            assert s.scalar(sa.select(sa.func.count()).select_from(Consent)) == 0

    def test_incident_with_scopes_updates_and_affected(self, engine) -> None:
        with transaction(engine) as s:
            self._customer(s)
            s.add(Service(id="broadband", name="Broadband"))
            s.flush()
            inc = Incident(title="Broadband down in north", started_at=T0)
            inc.scopes.append(IncidentScope(service_id="broadband", region="north"))
            inc.updates.append(IncidentUpdate(seq=1, status="identified", message="fibre cut"))
            inc.updates.append(IncidentUpdate(seq=0, status="investigating", message="looking"))
            s.add(inc)
            s.flush()
            s.add(
                AffectedCustomer(incident_id=inc.id, customer_id="c1", service_id="broadband", region="north")
            )
        with transaction(engine) as s:
            inc = s.scalars(sa.select(Incident)).one()
            assert [u.seq for u in inc.updates] == [0, 1]
            assert [(x.service_id, x.region) for x in inc.scopes] == [("broadband", "north")]
        with pytest.raises(IntegrityError), transaction(engine) as s:  # seq is unique per incident
            s.add(IncidentUpdate(incident_id=inc.id, seq=1, status="monitoring", message="dup"))

    def test_one_open_finding_per_condition(self, engine) -> None:
        def finding(status: str = "open") -> Finding:
            return Finding(
                customer_id="c1",
                kind="usage",
                condition="usage:drop:data_gb",
                status=status,
                score=5.0,
                confidence=0.9,
                explanation="Your usage dropped.",
                first_detected_at=T0,
                last_detected_at=T0,
            )

        with transaction(engine) as s:
            self._customer(s)
            s.flush()
            s.add(finding("closed"))
            s.add(finding("closed"))  # history may hold many closed ones
            s.add(finding("open"))
        with pytest.raises(IntegrityError), transaction(engine) as s:
            s.add(finding("open"))

    def test_outbox_idempotency_key_is_unique(self, engine) -> None:
        def msg() -> OutboxMessage:
            return OutboxMessage(
                idempotency_key="incident:1:u0:c1:email",
                customer_id="c1",
                channel="email",
                topic="outage",
                thread_key="incident:1:c1",
            )

        with transaction(engine) as s:
            self._customer(s)
            s.flush()
            s.add(msg())
        with pytest.raises(IntegrityError), transaction(engine) as s:
            s.add(msg())
        with transaction(engine) as s:
            m = s.scalars(sa.select(OutboxMessage)).one()
            assert (m.status, m.attempts, m.priority) == ("pending", 0, "normal")

    def test_deletes_reach_the_outbox_and_affected_customers(self, engine) -> None:
        """Erasing a customer removes their messages and impact rows; deleting an incident, finding or ticket
        keeps the messages without the reference (the parent tables' delete triggers, migration 0006)."""

        def count(s, model, *where) -> int:
            return s.scalar(sa.select(sa.func.count()).select_from(model).where(*where))

        with transaction(engine) as s:
            for cid in ("c1", "c2"):
                self._customer(s, cid)
            s.add(Service(id="broadband", name="Broadband"))
            inc = Incident(title="Broadband down", started_at=T0)
            s.add(inc)
            s.flush()
            finding = Finding(
                customer_id="c2",
                kind="usage",
                condition="usage:drop",
                score=1.0,
                confidence=1.0,
                explanation="x",
                first_detected_at=T0,
                last_detected_at=T0,
            )
            ticket = Ticket(external_id="e1", customer_id="c2", channel="phone", opened_at=T0)
            s.add_all([finding, ticket])
            s.flush()
            refs = dict(incident_id=inc.id, finding_id=finding.id, ticket_id=ticket.id)
            for cid in ("c1", "c2"):
                s.add(
                    AffectedCustomer(incident_id=inc.id, customer_id=cid, service_id="broadband", region="n")
                )
                s.add(
                    OutboxMessage(
                        idempotency_key=f"k-{cid}",
                        customer_id=cid,
                        channel="email",
                        topic="outage",
                        thread_key=f"t-{cid}",
                        **refs,
                    )
                )
        with transaction(engine) as s:
            s.execute(sa.delete(Customer).where(Customer.id == "c1"))
        with transaction(engine) as s:
            assert count(s, OutboxMessage, OutboxMessage.customer_id == "c1") == 0
            assert count(s, AffectedCustomer, AffectedCustomer.customer_id == "c1") == 0
            assert count(s, OutboxMessage) == count(s, AffectedCustomer) == 1
            s.execute(sa.delete(Incident))
            s.execute(sa.delete(Finding))
            s.execute(sa.delete(Ticket))
        with transaction(engine) as s:
            m = s.scalars(sa.select(OutboxMessage)).one()
            assert (m.customer_id, m.incident_id, m.finding_id, m.ticket_id) == ("c2", None, None, None)
            assert count(s, AffectedCustomer) == 0

    def test_ticket_external_id_is_unique(self, engine) -> None:
        with transaction(engine) as s:
            self._customer(s)
            s.flush()
            s.add(Ticket(external_id="e1", customer_id="c1", channel="phone", opened_at=T0))
        with pytest.raises(IntegrityError), transaction(engine) as s:
            s.add(Ticket(external_id="e1", customer_id="c1", channel="email", opened_at=T0))

    def test_ids_compare_byte_by_byte(self, engine) -> None:
        # identifiers are codes, not words: no locale rule (case folding, ignored punctuation) may reorder them
        ids = ["b", "B", "a-1", "a_1", "a1", "Z", "\u00e9", "e"]
        with transaction(engine) as s:
            for cid in ids:
                self._customer(s, cid)
        with transaction(engine) as s:
            stored = list(s.scalars(sa.select(Customer.id).order_by(Customer.id)))
            assert stored == sorted(ids, key=lambda i: i.encode())
            assert s.scalar(sa.select(sa.func.count()).where(Customer.id > "a_1")) == 3  # a1, b, é

    def test_downgrade_to_base_and_back(self, url: str) -> None:
        upgrade(url)
        downgrade(url, "base")
        engine = make_engine(url)
        assert schema_status(engine).database is None
        engine.dispose()
        upgrade(url)
        engine = open_store(url)
        assert schema_status(engine).current
        engine.dispose()


class TestSqliteStateStore(StateStoreContract):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url

    def test_a_bulk_transaction_is_checkpointed_after_its_commit_not_in_it(self, engine, url) -> None:
        from forewarn.state.db import SQLITE_AUTOCHECKPOINT, defer_checkpoint

        database = Path(url.split("///", 1)[1])
        before = database.stat().st_size
        with transaction(engine) as s:
            defer_checkpoint(s)
            for i in range(3000):
                self._customer(s, f"c{i}")
        # the pooled connection is back to SQLite's automatic checkpoints for whatever it does next...
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == SQLITE_AUTOCHECKPOINT
        # ...and the WAL reaches the database file in the background (these 80-odd pages are too few for
        # an automatic checkpoint: without the background one the file would not grow)
        deadline = time.monotonic() + 10
        while database.stat().st_size < before + 200_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.stat().st_size >= before + 200_000
        with transaction(engine) as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Customer)) == 3000

    def test_sqlite_runs_in_wal_mode_with_foreign_keys(self, engine) -> None:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.postgres
class TestPostgresStateStore(StateStoreContract):
    @pytest.fixture
    def url(self, pg_url: str) -> str:
        return pg_url

    def test_identifier_columns_are_byte_ordered_as_the_models_say(self, engine) -> None:
        # migration 0009 and the models' ``key()`` columns must agree (a join between a "C" column and a
        # locale column is an error on PostgreSQL); human text keeps the database's collation
        from forewarn.state.models import Base

        with engine.connect() as conn:
            actual = {
                (t, c): coll
                for t, c, coll in conn.exec_driver_sql(
                    "SELECT table_name, column_name, COALESCE(collation_name, 'default') "
                    "FROM information_schema.columns WHERE table_schema = 'public' "
                    "AND data_type = 'character varying'"
                )
            }
        compiled = {
            (table.name, col.name): col.type.compile(dialect=engine.dialect)
            for table in Base.metadata.tables.values()
            for col in table.columns
        }
        expected = {
            key: "C" if 'COLLATE "C"' in sql else "default"
            for key, sql in compiled.items()
            if sql.startswith("VARCHAR")
        }
        assert {k: v for k, v in actual.items() if k[0] != "alembic_version"} == expected
        assert expected[("outbox", "idempotency_key")] == "C" and expected[("outbox", "subject")] == "default"
