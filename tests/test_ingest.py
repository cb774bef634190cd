"""Ingestion of CSV, JSONL and Parquet: good rows kept, bad ones reported by line and field, none twice."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from forewarn.context import Context
from forewarn.signals.ingest import ingest_paths, ingest_records
from forewarn.state.customers import upsert_customers, upsert_dependencies, upsert_services
from forewarn.state.db import open_store, upgrade
from forewarn.state.models import Consent, Customer, Dependency, Ticket

COLS = ["event_id", "customer_id", "ts", "metric", "value", "period"]


def u(eid: str, cid: str, ts: str, value: str, metric: str = "data_gb", **extra: str) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "ts": ts, "metric": metric, "value": value, **extra}


# (row, the field that is wrong with it): 5 good rows, 1 repeat of a good row, 4 bad rows
ROWS: list[tuple[dict[str, Any], str | None]] = [
    (u("u1", "c1", "2026-01-01T00:00:00Z", "1.5", period="day"), None),
    (u("u2", "c1", "2026-01-02", "2"), None),
    (u("u3", "c2", "2026-01-02T10:00:00+02:00", "3.25"), None),
    (u("u4", "c2", "2026-01-03", "lots"), "value"),
    (u("u5", "c2", "yesterday", "1"), "ts"),
    (u("u1", "c1", "2026-01-01T00:00:00Z", "1.5", period="day"), None),
    (u("u6", "", "2026-01-03", "1"), "customer_id"),
    (u("u7", "c3", "1767312000", "4", "minutes"), None),
    (u("u8", "c3", "2026-01-04", "4", "minutes", period="fortnight"), "period"),
    (u("u9", "c3", "2026-01-05", "5", "minutes"), None),
]
GOOD_IDS = {"u1", "u2", "u3", "u7", "u9"}
BAD = [(i, f) for i, (_, f) in enumerate(ROWS) if f]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as CSV, JSONL or Parquet (all text columns) by the suffix."""
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLS)
            w.writeheader()
            w.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        table = pa.table({c: pa.array([r.get(c) or None for r in rows], pa.string()) for c in COLS})
        pq.write_table(table, path)
    return path


def first_line(fmt: str) -> int:
    """The line of the first data row: after the CSV header, else 1."""
    return 2 if fmt == "csv" else 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_good_bad_and_duplicate_rows(ctx: Context, tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path / f"usage.{fmt}", [r for r, _ in ROWS])
    report = ingest_paths(ctx, [path])
    src = report.sources[0]
    assert (src.new, src.duplicate, src.rejected) == (5, 1, 4)
    stored = ctx.signals.read("usage")
    assert set(stored["event_id"]) == GOOD_IDS and stored.height == 5  # nothing lost, nothing twice
    got = sorted((e.line, e.field) for e in src.errors)
    assert got == sorted((i + first_line(fmt), f) for i, f in BAD)
    for e in src.errors:
        assert e.file == str(path) and e.expected
    value_error = next(e for e in src.errors if e.field == "value")
    assert value_error.got == "lots" and value_error.expected == "a number"
    assert "one of hour, day, week, month" in next(e for e in src.errors if e.field == "period").expected
    # timestamps: zone offsets become UTC, no zone means UTC, epoch seconds work
    ts = dict(zip(stored["event_id"], stored["ts"], strict=True))
    assert ts["u3"] == datetime(2026, 1, 2, 8, tzinfo=UTC)
    assert ts["u2"] == datetime(2026, 1, 2, tzinfo=UTC)
    assert ts["u7"] == datetime(2026, 1, 2, tzinfo=UTC)
    # re-ingesting the same file adds nothing
    again = ingest_paths(ctx, [path]).sources[0]
    assert (again.new, again.duplicate, again.rejected) == (0, 6, 4)
    assert ctx.signals.count("usage") == 5


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_strict_rejects_the_whole_file(ctx: Context, tmp_path: Path, fmt: str) -> None:
    bad = write(tmp_path / f"usage.{fmt}", [r for r, _ in ROWS])
    good_dir = tmp_path / "good"
    good_dir.mkdir()
    good = write(good_dir / f"usage.{fmt}", [ROWS[0][0], ROWS[1][0]])
    report = ingest_paths(ctx, [bad, good], strict=True)
    by_source = {s.source: s for s in report.sources}
    assert by_source[str(bad)].new == 0 and by_source[str(bad)].rejected == len(ROWS)
    assert "strict" in (by_source[str(bad)].note or "")
    assert len(by_source[str(bad)].errors) == len(BAD)  # the errors are still listed
    assert by_source[str(good)].new == 2
    assert set(ctx.signals.read("usage")["event_id"]) == {"u1", "u2"}  # nothing from the bad file


def test_strict_creates_no_customers_for_a_rejected_file(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path / "usage.csv", [r for r, _ in ROWS])
    ingest_paths(ctx, [path], strict=True, unknown_customers="create")
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Customer)).scalar_one() == 0


def test_jsonl_malformed_and_blank_lines_keep_line_numbers(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    good = json.dumps(ROWS[0][0])
    path.write_text(f"{good}\n\n{{not json\n[1, 2]\n{json.dumps(ROWS[1][0])}\n")
    src = ingest_paths(ctx, [path]).sources[0]
    assert (src.new, src.rejected) == (2, 2)
    assert [(e.line, e.field) for e in src.errors] == [(3, "(row)"), (4, "(row)")]
    assert src.errors[0].got == "{not json"


def test_csv_row_with_wrong_number_of_values(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(
        "event_id,customer_id,ts,metric,value\n"
        "u1,c1,2026-01-01,data_gb,1\n"
        "u2,c1,2026-01-02,data_gb,1,extra\n"
        "u3,c1,2026-01-03,data_gb,1\n"
    )
    src = ingest_paths(ctx, [path]).sources[0]
    assert (src.new, src.rejected) == (2, 1)
    assert src.errors[0].line == 3 and "values" in src.errors[0].message


def test_parquet_native_types_epoch_and_row_numbers(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "usage.parquet"
    pl.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "customer_id": ["c1", "c1", None],
            "ts": [1767225600, 1767225600000, 1767225600],  # seconds, milliseconds
            "metric": ["data_gb"] * 3,
            "value": [1.0, float("nan"), 3.0],
        }
    ).write_parquet(path)
    src = ingest_paths(ctx, [path]).sources[0]
    assert (src.new, src.rejected) == (1, 2)
    assert sorted((e.line, e.field) for e in src.errors) == [(2, "value"), (3, "customer_id")]
    assert ctx.signals.read("usage")["ts"].to_list() == [datetime(2026, 1, 1, tzinfo=UTC)]


def test_unknown_customers_reject(ctx: Context, tmp_path: Path) -> None:
    upsert_customers(ctx.engine, [{"id": "c1"}])
    path = write(tmp_path / "usage.csv", [ROWS[0][0], ROWS[2][0]])
    src = ingest_paths(ctx, [path], unknown_customers="reject").sources[0]
    assert (src.new, src.rejected) == (1, 1)
    err = src.errors[0]
    assert (err.line, err.field, err.got) == (3, "customer_id", "c2")
    assert "unknown customer" in err.message


def test_unknown_customers_create(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path / "usage.csv", [ROWS[0][0], ROWS[2][0]])
    src = ingest_paths(ctx, [path], unknown_customers="create").sources[0]
    assert (src.new, src.rejected, src.created_customers) == (2, 0, 2)
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(Customer.id, Customer.timezone).order_by(Customer.id)).all()
    assert [tuple(r) for r in rows] == [("c1", "UTC"), ("c2", "UTC")]


def test_unknown_customers_setting_is_the_default(tmp_path: Path, sqlite_url: str) -> None:
    from forewarn.config import Settings

    upgrade(sqlite_url)
    ctx = Context(Settings(home=tmp_path, database_url=sqlite_url))  # a typo must not become a customer
    try:
        path = write(tmp_path / "usage.csv", [ROWS[0][0]])
        src = ingest_paths(ctx, [path]).sources[0]
        assert (src.rejected, src.unknown_customer_rows, src.created_customers) == (1, 1, 0)
    finally:
        ctx.close()


def test_kind_column_and_kind_option(ctx: Context, tmp_path: Path) -> None:
    mixed = tmp_path / "events.jsonl"
    mixed.write_text(
        json.dumps({**ROWS[0][0], "kind": "usage"})
        + "\n"
        + json.dumps(
            {
                "kind": "purchase",
                "event_id": "p1",
                "customer_id": "c1",
                "ts": "2026-01-01",
                "event_type": "visit",
            }
        )  # fmt: skip
        + "\n"
        + json.dumps({"kind": "weather", "event_id": "w1"})
        + "\n"
    )
    src = ingest_paths(ctx, [mixed]).sources[0]
    assert (src.new, src.rejected) == (2, 1)
    assert (src.errors[0].line, src.errors[0].field) == (3, "kind")
    assert ctx.signals.count("purchase") == 1
    # --kind overrides the file name
    other = write(tmp_path / "anything.csv", [ROWS[1][0]])
    assert ingest_paths(ctx, [other], kind="usage").new == 1
    # a file whose kind cannot be told is reported, not guessed
    report = ingest_paths(ctx, [tmp_path / "anything.csv"])
    assert report.sources[0].kind == "?" and "cannot tell the kind" in (report.sources[0].note or "")


def test_invoice_lines_from_csv_and_jsonl(ctx: Context, tmp_path: Path) -> None:
    lines = [{"code": "base", "description": "Plan", "amount": 30.0, "quantity": 1}]
    rec = {"event_id": "i1", "customer_id": "c1", "ts": "2026-02-01", "invoice_id": "INV1"}
    rec |= {"status": "issued", "period_start": "2026-01-01", "period_end": "2026-01-31", "total": 30.0}
    (tmp_path / "invoice.jsonl").write_text(
        json.dumps({**rec, "lines": lines})
        + "\n"
        + json.dumps({**rec, "event_id": "i2", "lines": "oops"})
        + "\n"
    )
    with open(tmp_path / "invoice.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rec, "lines"])
        w.writeheader()
        w.writerow({**rec, "event_id": "i3", "lines": json.dumps(lines)})
    report = ingest_paths(ctx, [tmp_path / "invoice.jsonl", tmp_path / "invoice.csv"])
    assert (report.new, report.rejected) == (2, 1)
    assert report.errors[0].field == "lines" and report.errors[0].line == 2
    stored = ctx.signals.read("invoice")
    assert stored["lines"].to_list()[0] == [{**lines[0], "quantity": 1.0}]


def _sim_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sim"
    d.mkdir()
    customers = [
        {"id": "c1", "name": "Ada", "email": "ada@example.com", "timezone": "Europe/Paris",
         "channels": ["email"], "consent": {"email": {"*": True, "marketing": False}},
         "attributes": {"plan_limit_gb": 50}},
        {"id": "c2", "name": "Bo", "timezone": "America/New_York", "consent": {"sms": {"*": True}}},
    ]  # fmt: skip
    (d / "customers.jsonl").write_text("".join(json.dumps(c) + "\n" for c in customers))
    (d / "services.csv").write_text("id,name,description\ninternet,Internet,Home broadband\n")
    (d / "dependencies.csv").write_text(
        "customer_id,service_id,region\nc1,internet,north\nc2,internet,south\n"
    )
    write(d / "usage.csv", [ROWS[0][0], ROWS[1][0], ROWS[2][0]])
    contacts = [
        {"event_id": "k1", "customer_id": "c1", "ts": "2026-01-05T09:00:00Z", "channel": "phone",
         "subject": "No internet", "text": "It is down again", "topic": "outage"},
        {"event_id": "k2", "customer_id": "c2", "ts": "2026-01-05T10:00:00Z", "channel": "email"},
    ]  # fmt: skip
    (d / "contact.jsonl").write_text("".join(json.dumps(c) + "\n" for c in contacts))
    (d / "ground_truth.jsonl").write_text('{"event": "outage"}\n')
    (d / "world.json").write_text("{}\n")
    return d


def test_directory_entities_first_then_signals(ctx: Context, tmp_path: Path) -> None:
    d = _sim_dir(tmp_path)
    report = ingest_paths(ctx, [d], unknown_customers="reject")  # works: customers are loaded first
    kinds = [s.kind for s in report.sources if s.kind not in ("-", "?")]
    assert kinds[:3] == ["customers", "services", "dependencies"]
    assert report.rejected == 0, report.errors
    notes = {Path(s.source).name: s.note for s in report.sources if s.kind == "-"}
    assert set(notes) == {"ground_truth.jsonl", "world.json"}
    assert ctx.signals.count("usage") == 3 and ctx.signals.count("contact") == 2
    with Session(ctx.engine) as session:
        tickets = session.scalars(sa.select(Ticket).order_by(Ticket.external_id)).all()
        consent = session.execute(sa.select(Consent.channel, Consent.topic, Consent.granted)).all()
        deps = session.scalar(sa.select(sa.func.count()).select_from(Dependency))
    assert [t.external_id for t in tickets] == ["k1", "k2"]
    k1 = tickets[0]
    assert (k1.channel, k1.subject, k1.topic, k1.status) == ("phone", "No internet", "outage", "open")
    assert k1.opened_at == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert ("email", "marketing", False) in {tuple(c) for c in consent}
    assert deps == 2
    # everything again: nothing new anywhere, no second ticket
    again = ingest_paths(ctx, [d])
    assert again.new == 0 and again.rejected == 0
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Ticket)).scalar_one() == 2


def test_records_api_names_the_index(ctx: Context) -> None:
    events = [ROWS[0][0], {**ROWS[3][0]}, 5]
    report = ingest_records(ctx, "usage", events)  # type: ignore[list-item]
    assert (report.new, report.rejected) == (1, 2)
    assert [(e.line, e.field) for e in report.errors] == [(1, "value"), (2, "(row)")]
    strict = ingest_records(ctx, "usage", [ROWS[1][0], ROWS[3][0]], strict=True)
    assert strict.new == 0 and ctx.signals.count("usage") == 1


def test_cli_ingest_summary_and_exit_code(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forewarn.cli import app
    from forewarn.config import get_settings

    monkeypatch.setenv("FOREWARN_HOME", str(ctx.settings.home))
    monkeypatch.setenv("FOREWARN_DATABASE_URL", ctx.settings.database_url)
    get_settings.cache_clear()
    ctx.close()  # one writer per DuckDB file: the CLI opens its own
    try:
        good = write(tmp_path / "usage.csv", [ROWS[0][0]])
        result = CliRunner().invoke(app, ["ingest", str(good), "--no-progress"])
        assert result.exit_code == 1  # the default rejects customers the store does not know, and says so
        assert "1 row for customers the state store does not know rejected" in " ".join(result.output.split())
        result = CliRunner().invoke(
            app, ["ingest", str(good), "--no-progress", "--unknown-customers", "create"]
        )
        assert result.exit_code == 0, result.output
        assert "total" in result.output
        bad_dir = tmp_path / "bad"
        bad_dir.mkdir()
        bad = write(bad_dir / "usage.csv", [r for r, _ in ROWS])
        result = CliRunner().invoke(app, ["ingest", str(bad), "--strict", "--no-progress"])
        assert result.exit_code == 1
        assert "field 'value'" in result.output and ":5:" in result.output
    finally:
        get_settings.cache_clear()


# -- customers, services, dependencies on SQLite and PostgreSQL ---------------------------------------------


class CustomerUpsertContract:
    """The same upsert tests on each backend; subclasses provide ``url``."""

    @pytest.fixture
    def engine(self, url: str) -> sa.Engine:
        upgrade(url)
        engine = open_store(url)
        yield engine
        engine.dispose()

    def test_insert_then_update_with_consent(self, engine: sa.Engine) -> None:
        first = upsert_customers(
            engine,
            [
                {"id": "c1", "name": "Ada", "timezone": "Europe/Paris", "channels": ["sms", "email"],
                 "consent": {"email": {"*": True}}, "attributes": {"vip": True}},
                {"id": "c2", "email": "bo@example.com"},
            ],
        )  # fmt: skip
        assert (first.inserted, first.updated, first.rejected) == (2, 0, 0)
        second = upsert_customers(
            engine, [{"id": "c1", "name": "Ada L.", "consent": {"email": {"*": True, "marketing": False}}}]
        )
        assert (second.inserted, second.updated) == (0, 1)
        with Session(engine) as session:
            c1 = session.get_one(Customer, "c1")
            consents = session.execute(
                sa.select(Consent.channel, Consent.topic, Consent.granted).where(Consent.customer_id == "c1")
            ).all()
        assert c1.name == "Ada L."
        assert c1.timezone == "UTC"  # a full record replaces the fields it lists (defaults included)
        assert {tuple(c) for c in consents} == {("email", "*", True), ("email", "marketing", False)}

    def test_bad_records_are_reported_by_line_and_field(self, engine: sa.Engine) -> None:
        res = upsert_customers(
            engine,
            [(2, {"id": "ok"}), (3, {"id": "x", "timezone": "Mars/Olympus"}),
             (4, {"id": "y", "email": "nope"}), (5, {"id": "z", "consent": {"email": {"*": "perhaps"}}}),
             (6, {"name": "no id"})],
        )  # fmt: skip
        assert (res.inserted, res.rejected) == (1, 4)
        assert [(e.line, e.field) for e in res.errors] == [
            (3, "timezone"),
            (4, "email"),
            (5, "consent.email.*"),
            (6, "id"),
        ]
        assert "IANA" in res.errors[0].expected

    def test_csv_cells_hold_json(self, engine: sa.Engine) -> None:
        res = upsert_customers(
            engine, [{"id": "c1", "channels": '["sms"]', "consent": '{"sms": {"*": true}}'}]
        )
        assert res.inserted == 1
        with engine.connect() as conn:
            assert conn.execute(sa.select(Customer.channels)).scalar_one() == ["sms"]

    def test_services_and_dependencies(self, engine: sa.Engine) -> None:
        upsert_customers(engine, [{"id": "c1"}])
        assert upsert_services(engine, [{"id": "net", "name": "Internet"}]).inserted == 1
        assert upsert_services(engine, [{"id": "net", "name": "Broadband"}]).updated == 1
        deps = [
            {"customer_id": "c1", "service_id": "net", "region": "north"},
            {"customer_id": "c9", "service_id": "net", "region": "north"},
        ]
        res = upsert_dependencies(engine, deps)
        assert (res.inserted, res.rejected) == (1, 1)
        assert res.errors[0].field == "customer_id" and res.errors[0].line == 1
        again = upsert_dependencies(engine, deps[:1])
        assert (again.inserted, again.updated) == (0, 1)


class TestCustomerUpsertSqlite(CustomerUpsertContract):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url


@pytest.mark.postgres
class TestCustomerUpsertPostgres(CustomerUpsertContract):
    @pytest.fixture
    def url(self, pg_url: str) -> str:
        return pg_url


def test_unreadable_file_is_reported_not_raised(ctx: Context, tmp_path: Path) -> None:
    broken = tmp_path / "usage.parquet"
    broken.write_bytes(b"PAR1 this is not parquet at all")
    good = write(tmp_path / "purchase.csv", [])
    report = ingest_paths(ctx, [broken, good])
    src = next(s for s in report.sources if s.source == str(broken))
    assert src.failed and "cannot read" in (src.note or "")
    assert not report.ok  # the CLI exits 1


def test_a_repeated_event_id_keeps_its_first_row(ctx: Context, tmp_path: Path) -> None:
    rows = [u("same", "c1", "2026-01-01", str(v)) for v in (1, 2, 3)] * 2000  # spread over threads
    path = write(tmp_path / "usage.csv", rows)
    src = ingest_paths(ctx, [path]).sources[0]
    assert (src.new, src.duplicate) == (1, len(rows) - 1)
    assert ctx.signals.read("usage")["value"].to_list() == [1.0]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_repeats_and_stored_ids_across_id_ranges(ctx: Context, tmp_path: Path, fmt: str) -> None:
    # the first file fills an empty table; the second has a new id range (no stored id in it) and a repeated
    # id; the third overlaps both stored ranges, repeats an id and has a bad row: each path counts the same
    upsert_customers(ctx.engine, [{"id": "c1"}])
    first = write(tmp_path / f"a.{fmt}", [u(f"a{i}", "c1", "2026-01-01", str(i)) for i in range(5)])
    src = ingest_paths(ctx, [first], kind="usage").sources[0]
    assert (src.new, src.duplicate, src.rejected) == (5, 0, 0)
    second = write(
        tmp_path / f"b.{fmt}",
        # a missing id must not make the repeated one look unique
        [u("b1", "c1", "2026-01-01", "1"), u("", "c1", "2026-01-01", "1"), u("b1 ", "c1", "2026-01-01", "2")],
    )
    src = ingest_paths(ctx, [second], kind="usage").sources[0]
    assert (src.new, src.duplicate, src.rejected) == (1, 1, 1)
    rows = [
        u("a1", "c1", "2026-01-01", "9"),
        u("a9", "c1", "2026-01-01", "3"),
        u("a9", "c1", "2026-01-01", "4"),
    ]
    rows += [u("b1", "c1", "2026-01-01", "9"), u("a8", "c1", "later", "1")]
    src = ingest_paths(ctx, [write(tmp_path / f"c.{fmt}", rows)], kind="usage").sources[0]
    assert (src.new, src.duplicate, src.rejected) == (1, 3, 1)
    assert [(e.line, e.field) for e in src.errors] == [(first_line(fmt) + 4, "ts")]
    stored = dict(ctx.signals.read("usage").select("event_id", "value").iter_rows())
    assert (len(stored), stored["a1"], stored["b1"], stored["a9"]) == (7, 1.0, 1.0, 3.0)


def _usage(eid: str, cid: str) -> dict[str, Any]:
    return {"event_id": eid, "customer_id": cid, "ts": "2026-01-01", "metric": "data_gb", "value": 1.0}


def test_known_customer_cache_outlives_a_batch_but_not_a_delete(ctx: Context) -> None:
    from forewarn.signals.ingest import known_customer_cache

    upsert_customers(ctx.engine, [(0, {"id": "k1"})])
    assert ingest_records(ctx, "usage", [_usage("a1", "k1")], unknown_customers="reject").new == 1
    assert "k1" in known_customer_cache(ctx.engine)
    # a strict batch rejected for a bad row creates no customer, so caches none
    bad = [_usage("a2", "k2"), {**_usage("a3", "k2"), "value": "lots"}]
    assert ingest_records(ctx, "usage", bad, strict=True, unknown_customers="create").new == 0
    assert "k2" not in known_customer_cache(ctx.engine)
    r = ingest_records(ctx, "usage", [_usage("a4", "k2")], unknown_customers="reject")
    assert (r.new, r.rejected) == (0, 1)
    # deleting a customer forgets the cache: its events are unknown again
    with ctx.engine.begin() as conn:
        conn.execute(sa.delete(Customer).where(Customer.id == "k1"))
    assert "k1" not in known_customer_cache(ctx.engine)
    r = ingest_records(ctx, "usage", [_usage("a5", "k1")], unknown_customers="reject")
    assert (r.new, r.rejected) == (0, 1)


def test_records_of_mixed_scalar_types_and_nested_values(ctx: Context) -> None:
    upsert_customers(ctx.engine, [(0, {"id": "m1"})])
    recs = [
        {**_usage("m-a", "m1"), "value": "2.5"},  # text a number: accepted, as from a JSON file
        {**_usage("m-b", "m1"), "value": 3},
        {**_usage("m-c", "m1"), "value": "lots"},
        {**_usage("m-d", "m1"), "value": True},
    ]
    r = ingest_records(ctx, "usage", recs, unknown_customers="reject")
    assert (r.new, r.rejected) == (2, 2)
    assert [(e.line, e.field, e.got) for e in r.errors] == [(2, "value", "lots"), (3, "value", "true")]
    # a nested value or a NaN takes the JSON path and is still worded by index and field
    nested = [{**_usage("m-e", "m1"), "value": {"x": 1}}, {**_usage("m-f", "m1"), "value": 1.0}]
    r = ingest_records(ctx, "usage", nested, unknown_customers="reject")
    assert (r.new, r.rejected) == (1, 1)
    assert (r.errors[0].line, r.errors[0].field) == (0, "value")


def test_plural_file_names_are_read_as_their_kind_and_unknown_names_are_skipped(
    ctx: Context, tmp_path: Path
) -> None:
    """``invoices.jsonl`` and ``contacts.csv`` (the README's names) are read as invoice and contact; a file
    whose kind cannot be told is skipped, reported as failed and not counted as rows."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("event_id,customer_id,ts,channel,subject\nk1,c1,2026-01-02,phone,bill\n")
    invoices = tmp_path / "invoices.jsonl"
    invoices.write_text(
        json.dumps(
            {
                "event_id": "i1",
                "customer_id": "c1",
                "ts": "2026-01-03",
                "invoice_id": "INV-1",
                "status": "issued",
                "period_start": "2025-12-01",
                "period_end": "2025-12-31",
                "total": 20.0,
                "lines": [{"code": "base", "description": "Plan", "amount": 20.0}],
            }
        )
        + "\n"
    )
    mystery = tmp_path / "stuff.csv"
    mystery.write_text("a,b\n1,2\n")
    report = ingest_paths(ctx, [contacts, invoices, mystery])
    by_name = {Path(s.source).name: s for s in report.sources}
    assert by_name["contacts.csv"].kind == "contact" and by_name["contacts.csv"].new == 1
    assert by_name["invoices.jsonl"].kind == "invoice" and by_name["invoices.jsonl"].new == 1
    skipped = by_name["stuff.csv"]
    assert skipped.failed and skipped.rows == 0 and "plurals" in (skipped.note or "")
    assert not report.ok


def test_cli_shows_the_kind_read_and_counts_skipped_files(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forewarn.cli import app
    from forewarn.config import get_settings

    monkeypatch.setenv("FOREWARN_HOME", str(ctx.settings.home))
    monkeypatch.setenv("FOREWARN_DATABASE_URL", ctx.settings.database_url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    ctx.close()
    try:
        upsert_customers(open_store(ctx.settings.database_url), [{"id": "c1"}])
        contacts = tmp_path / "contacts.csv"
        contacts.write_text("event_id,customer_id,ts,channel,subject\nk1,c1,2026-01-02,phone,bill\n")
        (tmp_path / "stuff.csv").write_text("a,b\n1,2\n")
        result = CliRunner().invoke(
            app, ["ingest", str(contacts), str(tmp_path / "stuff.csv"), "--no-progress"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "contact" in rows["contacts.csv"] and "skipped" in rows["stuff.csv"]
    assert "1 file skipped" in rows["total"]
    assert "1 ticket opened" in result.output
