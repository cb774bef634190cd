"""Right of access and erasure across both stores (state on SQLite and PostgreSQL, signals in DuckDB), through
the library, the CLI and the API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from forewarn.api.app import create_app
from forewarn.cli import app as cli
from forewarn.config import Settings, get_settings
from forewarn.context import Context
from forewarn.privacy import subject
from forewarn.signals.schema import KINDS
from forewarn.sim import synthetic
from forewarn.state.db import upgrade
from forewarn.state.models import (
    AffectedCustomer,
    Consent,
    Customer,
    Dependency,
    Finding,
    OutboxMessage,
    Ticket,
)

PER_CUSTOMER = (Consent, Dependency, AffectedCustomer, Finding, Ticket, OutboxMessage)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    """A synthetic history (customers, incidents, notices, findings, tickets, signals) in both stores."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    upgrade(url)
    ctx = Context(Settings(home=tmp_path, database_url=url, secret_key="test-secret"))
    synthetic.build(ctx.engine, ctx.signals, customers=60, n_signals=6000, days=30)
    with ctx.engine.begin() as conn:  # consent rows too, which the synthetic history has none of
        ids = conn.scalars(sa.select(Customer.id)).all()
        conn.execute(
            sa.insert(Consent),
            [{"customer_id": c, "channel": "email", "topic": "*", "granted": True} for c in ids],
        )
    yield ctx
    ctx.close()


def rich_customer(ctx: Context) -> str:
    """A customer with rows in every table and signals."""
    with ctx.engine.connect() as conn:
        candidates = set(conn.scalars(sa.select(Customer.id)).all())
        for model in (Finding, Ticket, OutboxMessage, AffectedCustomer):
            candidates &= set(conn.scalars(sa.select(model.customer_id)).all())
    with_signals = set(ctx.signals.read("usage", columns=["customer_id"])["customer_id"].to_list())
    return sorted(candidates & with_signals)[0]


def snapshot(ctx: Context, customer_id: str) -> dict[str, int]:
    """Row counts of everyone else's data, per table and signal kind (tombstones are nobody's)."""
    out = {}
    with ctx.engine.connect() as conn:
        for model in (Customer, *PER_CUSTOMER):
            column = model.id if model is Customer else model.customer_id
            out[model.__tablename__] = conn.scalar(
                sa.select(sa.func.count())
                .select_from(model)
                .where(column != customer_id, ~column.startswith("erased:"))
            )
    for kind in KINDS.values():
        if "customer_id" in kind.columns:
            frame = ctx.signals.read(kind.name, columns=["customer_id"])
            out[kind.name] = frame.filter(frame["customer_id"] != customer_id).height
    return out


def held_in_state(ctx: Context, customer_id: str) -> dict[str, int]:
    with ctx.engine.connect() as conn:
        held = {
            m.__tablename__: conn.scalar(
                sa.select(sa.func.count()).select_from(m).where(m.customer_id == customer_id)
            )
            for m in PER_CUSTOMER
        }
        held["customers"] = conn.scalar(
            sa.select(sa.func.count()).select_from(Customer).where(Customer.id == customer_id)
        )
    return {k: v for k, v in held.items() if v}


def held_in_signals(ctx: Context, customer_id: str) -> dict[str, int]:
    out = {}
    for kind in KINDS.values():
        if "customer_id" in kind.columns:
            n = ctx.signals.read(kind.name, customers=[customer_id]).height
            if n:
                out[kind.name] = n
    return out


def test_export_holds_everything_about_the_customer(store: Context) -> None:
    cid = rich_customer(store)
    data = subject.export(store.engine, store.signals, cid)
    json.dumps(data)  # JSON as it is
    with store.engine.connect() as conn:
        email = conn.scalar(sa.select(Customer.email).where(Customer.id == cid))
        bodies = conn.scalars(sa.select(OutboxMessage.body).where(OutboxMessage.customer_id == cid)).all()
    assert data["customer"]["id"] == cid and data["customer"]["email"] == email
    assert data["consents"] and data["dependencies"] and data["findings"] and data["tickets"]
    assert sorted(m["body"] for m in data["messages"]) == sorted(bodies)
    assert {k: len(v) for k, v in data["signals"].items()} == held_in_signals(store, cid)
    assert all(r["customer_id"] == cid for rows in data["signals"].values() for r in rows)
    with pytest.raises(subject.NotFound):
        subject.export(store.engine, store.signals, "nobody-at-all")


def test_erasure_reaches_both_stores_keeps_tombstones_and_is_idempotent(store: Context) -> None:
    cid = rich_customer(store)
    others = snapshot(store, cid)
    with store.engine.connect() as conn:
        messages = conn.execute(
            sa.select(OutboxMessage.id, OutboxMessage.status).where(OutboxMessage.customer_id == cid)
        ).all()
        contact = conn.execute(sa.select(Customer.email, Customer.phone).where(Customer.id == cid)).one()
    held = held_in_state(store, cid)
    assert held["consents"] and held["findings"] and held["tickets"] and held["outbox"]
    signals_held = held_in_signals(store, cid)
    assert signals_held

    report = subject.erase(store.engine, store.signals, cid, secret="test-secret")
    assert report.found and report.customer_deleted
    assert report.signals == signals_held
    assert report.messages_kept_as_tombstones == len(messages)
    assert (
        report.state_rows["tickets"] == held["tickets"] and report.state_rows["findings"] == held["findings"]
    )

    assert held_in_state(store, cid) == {} and held_in_signals(store, cid) == {}
    with store.engine.connect() as conn:
        tombs = conn.execute(
            sa.select(OutboxMessage).where(OutboxMessage.customer_id == report.pseudonym).order_by("id")
        ).all()
    assert [t.id for t in tombs] == sorted(m.id for m in messages)
    assert all(t.address is None and t.body == "" and t.subject == "" and t.payload == {} for t in tombs)
    assert all(cid not in t.idempotency_key and cid not in t.thread_key for t in tombs)
    assert [t.status for t in tombs if t.status in subject.UNSENT] == []  # nothing left to send or retry
    assert sum(t.status == "sent" for t in tombs) == sum(s == "sent" for _, s in messages)  # counts hold
    assert snapshot(store, cid) == others  # nobody else lost anything

    if store.engine.dialect.name == "sqlite":  # not a trace in the whole database file's content
        dump = "\n".join(sqlite3.connect(store.engine.url.database).iterdump())
        assert contact.email not in dump and contact.phone not in dump
        assert f"'{cid}'" not in dump

    again = subject.erase(store.engine, store.signals, cid, secret="test-secret")
    assert not again.found and again.pseudonym == report.pseudonym
    assert again.signals == {} and again.state_rows == {} and again.messages_kept_as_tombstones == 0
    assert snapshot(store, cid) == others
    with pytest.raises(subject.NotFound):
        subject.export(store.engine, store.signals, cid)


def test_erasure_through_the_api(ctx: Context, api_headers: dict[str, str]) -> None:
    synthetic.build(ctx.engine, ctx.signals, customers=30, n_signals=2000, days=20)
    cid = rich_customer(ctx)
    with TestClient(create_app(ctx), headers=api_headers) as client:
        exported = client.get(f"/v1/customers/{cid}/export")
        assert exported.status_code == 200 and exported.json()["customer"]["id"] == cid
        r = client.delete(f"/v1/customers/{cid}")
        assert r.status_code == 200 and r.json()["found"] and r.json()["signals"]
        assert client.get(f"/v1/customers/{cid}/export").status_code == 404
        again = client.delete(f"/v1/customers/{cid}")
        assert again.status_code == 200 and again.json()["found"] is False
    assert held_in_state(ctx, cid) == {} and held_in_signals(ctx, cid) == {}
    with ctx.engine.connect() as conn:  # the audit names the pseudonym, never the erased id
        logged = conn.execute(sa.text("SELECT action, target FROM audit_log")).all()
    assert ("customer.erased", r.json()["pseudonym"]) in [tuple(x) for x in logged]
    assert all(cid not in (t or "") for _, t in logged)


def test_export_and_erase_from_the_cli(ctx: Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    synthetic.build(ctx.engine, ctx.signals, customers=30, n_signals=2000, days=20)
    cid = rich_customer(ctx)
    ctx.close()  # the CLI opens the stores itself
    monkeypatch.setenv("FOREWARN_HOME", str(ctx.settings.home))
    monkeypatch.setenv("FOREWARN_DATABASE_URL", ctx.settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        out = tmp_path / "export.json"
        r = runner.invoke(cli, ["customers", "export", cid, "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert json.loads(out.read_text())["customer"]["id"] == cid
        assert runner.invoke(cli, ["customers", "erase", cid], input="n\n").exit_code != 0  # asked, refused
        r = runner.invoke(cli, ["customers", "erase", cid, "--yes"])
        assert r.exit_code == 0 and "erased" in r.output, r.output
        r = runner.invoke(cli, ["customers", "erase", cid, "--yes"])
        assert r.exit_code == 0 and "nothing to erase" in r.output
        r = runner.invoke(cli, ["customers", "export", cid])
        assert r.exit_code == 1 and "no data held" in r.output
    finally:
        get_settings.cache_clear()
    check = Context(ctx.settings)
    assert held_in_state(check, cid) == {} and held_in_signals(check, cid) == {}
    check.close()
