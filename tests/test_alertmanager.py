"""Alertmanager webhook: replays, grouping, resolution, widening, bad payloads (through the real API)."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from forewarn.incidents.service import list_incidents
from forewarn.state.db import transaction
from incident_helpers import outbox, seed_isp


def payload(status: str = "firing", regions: tuple[str, ...] = ("north",), group: str = "g1") -> dict:
    alerts = [
        {
            "status": status,
            "labels": {
                "alertname": "BNGDown",
                "service": "internet",
                "region": r,
                "severity": "critical",
                "instance": f"bng-{r}",
            },
            "annotations": {
                "summary": "Internet outage",
                "description": f"Broadband gateway in {r} is down.",
            },
            "startsAt": "2026-03-01T09:00:00Z",
            "endsAt": "2026-03-01T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": f"fp-{r}",
        }
        for r in regions
    ]
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="BNGDown",group="{group}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "forewarn",
        "groupLabels": {"alertname": "BNGDown"},
        "commonLabels": {"alertname": "BNGDown", "service": "internet"},
        "commonAnnotations": {"summary": "Internet outage"},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


@pytest.fixture
def client(ctx, api_headers):
    seed_isp(ctx.engine)
    with TestClient(create_app(ctx), headers=api_headers) as c:
        yield c


def incidents(ctx):
    with transaction(ctx.engine) as s:
        return list_incidents(s)


def test_replayed_three_times_opens_one_incident(client, ctx) -> None:
    actions = [client.post("/v1/alertmanager", json=payload()).json()["action"] for _ in range(3)]
    assert actions == ["opened", "unchanged", "unchanged"]
    [inc] = incidents(ctx)
    assert inc.source == "alertmanager" and inc.severity == "critical" and inc.title == "Internet outage"
    assert inc.started_at.isoformat() == "2026-03-01T09:00:00+00:00"
    # one opening notice per north customer, not three
    assert len(outbox(ctx.engine, inc.id)) == 6


def test_grouped_alerts_become_one_incident_and_growth_widens(client, ctx) -> None:
    r = client.post("/v1/alertmanager", json=payload(regions=("north", "south"))).json()
    assert r["action"] == "opened"
    [inc] = incidents(ctx)
    assert {(s.service_id, s.region) for s in inc.scopes} == {("internet", "north"), ("internet", "south")}
    assert len(outbox(ctx.engine, inc.id)) == 9
    # the group grows to east: same incident, only east customers caught up
    r = client.post("/v1/alertmanager", json=payload(regions=("north", "south", "east"))).json()
    assert r["action"] == "widened" and r["incident_id"] == inc.id
    rows = outbox(ctx.engine, inc.id)
    assert len(rows) == 12 and len(incidents(ctx)) == 1
    # a different group is a different incident
    assert client.post("/v1/alertmanager", json=payload(group="g2")).json()["action"] == "opened"
    assert len(incidents(ctx)) == 2


def test_resolved_resolves_and_replays_are_ignored(client, ctx) -> None:
    client.post("/v1/alertmanager", json=payload())
    r = client.post("/v1/alertmanager", json=payload("resolved")).json()
    assert r["action"] == "resolved"
    [inc] = incidents(ctx)
    assert inc.status == "resolved" and inc.resolved_at.isoformat() == "2026-03-01T11:00:00+00:00"
    templates = [m.payload["template"] for m in outbox(ctx.engine, inc.id) if m.customer_id == "C00"]
    assert templates == ["incident_open", "incident_resolved"]
    # replaying the resolved payload, or the old firing one, changes nothing
    assert client.post("/v1/alertmanager", json=payload("resolved")).json()["action"] == "ignored"
    assert client.post("/v1/alertmanager", json=payload()).json()["action"] == "ignored"
    assert len(incidents(ctx)) == 1
    # the same group firing again later is a new outage
    again = copy.deepcopy(payload())
    again["alerts"][0]["startsAt"] = "2026-03-02T09:00:00Z"
    assert client.post("/v1/alertmanager", json=again).json()["action"] == "opened"
    assert len(incidents(ctx)) == 2


def test_bad_payloads_get_clear_errors(client) -> None:
    bad = payload()
    del bad["alerts"][0]["labels"]["service"]
    del bad["commonLabels"]["service"]
    r = client.post("/v1/alertmanager", json=bad)
    detail = r.json()["detail"][0]  # FastAPI's shape, as every 422 of the API
    assert r.status_code == 422 and "alerts[0].labels" in detail["msg"] and "service" in detail["msg"]
    assert detail["loc"] == ["body"]
    r = client.post("/v1/alertmanager", json={**payload(), "status": "weird"})
    assert r.status_code == 422 and "status" in r.json()["detail"][0]["msg"]
    bad = payload()
    bad["alerts"][0]["startsAt"] = "yesterday"
    r = client.post("/v1/alertmanager", json=bad)
    assert r.status_code == 422 and "alerts[0].startsAt" in r.json()["detail"][0]["msg"]
