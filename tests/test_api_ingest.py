"""The ingestion API: POST /v1/signals and PUT /v1/customers, through a real ASGI app."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from forewarn.context import Context
from forewarn.state.models import Consent, Customer


@pytest.fixture
def client(ctx: Context, api_headers: dict[str, str]) -> TestClient:
    with TestClient(create_app(ctx), headers=api_headers) as c:
        yield c


def usage(i: int, **over: Any) -> dict[str, Any]:
    ev = {"event_id": f"e{i}", "customer_id": f"c{i % 3}", "ts": f"2026-01-{1 + i % 28:02d}T10:00:00Z",
          "metric": "data_gb", "value": 1.0 + i}  # fmt: skip
    return {**ev, **over}


def test_accepts_a_batch_and_resending_is_a_no_op(client: TestClient, ctx: Context) -> None:
    batch = {"kind": "usage", "events": [usage(i) for i in range(50)]}
    r = client.post("/v1/signals", json=batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"new": 50, "duplicate": 0, "rejected": 0, "errors": []}
    r = client.post("/v1/signals", json=batch)
    assert r.json()["new"] == 0 and r.json()["duplicate"] == 50
    assert ctx.signals.count("usage") == 50


def test_malformed_batch_is_422_naming_index_and_field(client: TestClient, ctx: Context) -> None:
    events = [usage(0), usage(1, value="a lot"), usage(2), usage(3, ts=None)]
    r = client.post("/v1/signals", json={"kind": "usage", "events": events})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "events", 1, "value"], ["body", "events", 3, "ts"]]
    assert detail[0]["input"] == "a lot" and "a number" in detail[0]["msg"]
    assert ctx.signals.count("usage") == 0  # all or nothing


def test_partial_keeps_the_good_events(client: TestClient, ctx: Context) -> None:
    events = [usage(0), usage(1, value="a lot")]
    r = client.post("/v1/signals?partial=true", json={"kind": "usage", "events": events})
    assert r.status_code == 200
    body = r.json()
    assert (body["new"], body["rejected"]) == (1, 1)
    assert body["errors"][0]["loc"] == ["body", "events", 1, "value"]


def test_events_carrying_their_own_kind(client: TestClient, ctx: Context) -> None:
    events = [
        {**usage(0), "kind": "usage"},
        {"kind": "contact", "event_id": "k1", "customer_id": "c1", "ts": "2026-01-02T08:00:00Z",
         "channel": "chat", "subject": "Slow"},
    ]  # fmt: skip
    r = client.post("/v1/signals", json={"events": events})
    assert r.status_code == 200, r.text
    assert ctx.signals.count("usage") == 1 and ctx.signals.count("contact") == 1


def test_unknown_kind_and_envelope_errors(client: TestClient) -> None:
    r = client.post("/v1/signals", json={"kind": "weather", "events": []})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
    r = client.post("/v1/signals", json={"kind": "usage"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events"]


def test_put_customers_upserts_and_rejects_bad_ones(client: TestClient, ctx: Context) -> None:
    people = [
        {"id": "c1", "name": "Ada", "timezone": "Europe/Paris", "consent": {"email": {"*": True}}},
        {"id": "c2", "email": "bo@example.com"},
    ]
    r = client.put("/v1/customers", json=people)
    assert r.status_code == 200, r.text
    assert (r.json()["inserted"], r.json()["updated"]) == (2, 0)
    r = client.put("/v1/customers", json=[{**people[0], "name": "Ada L."}])
    assert (r.json()["inserted"], r.json()["updated"]) == (0, 1)
    r = client.put("/v1/customers", json=[{"id": "c3"}, {"id": "c4", "timezone": "Nowhere/Land"}])
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "items", 1, "timezone"]
    with ctx.engine.connect() as conn:
        ids = conn.execute(sa.select(Customer.id).order_by(Customer.id)).scalars().all()
        names = dict(conn.execute(sa.select(Customer.id, Customer.name)).all())
        consents = conn.execute(sa.select(sa.func.count()).select_from(Consent)).scalar_one()
    assert ids == ["c1", "c2"]  # c3 not stored: the list was rejected whole
    assert names["c1"] == "Ada L." and consents == 1


def test_services_and_dependencies(client: TestClient) -> None:
    client.put("/v1/customers", json=[{"id": "c1"}])
    assert client.put("/v1/services", json=[{"id": "net", "name": "Internet"}]).json()["inserted"] == 1
    r = client.put("/v1/dependencies", json=[{"customer_id": "c1", "service_id": "net", "region": "north"}])
    assert r.status_code == 200 and r.json()["inserted"] == 1
    r = client.put("/v1/dependencies", json=[{"customer_id": "zz", "service_id": "net", "region": "north"}])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "items", 0, "customer_id"]
