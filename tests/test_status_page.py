"""The incidents API and the public status page (HTML and JSON) through the real app."""

from __future__ import annotations

from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from incident_helpers import seed_isp


def test_incident_api_and_status_page(ctx, api_headers) -> None:
    seed_isp(ctx.engine)
    with TestClient(create_app(ctx), headers=api_headers) as c:
        assert c.get("/status.json").json()["overall"] == "operational"
        r = c.post(
            "/v1/incidents",
            json={
                "title": "Internet <down> in north",
                "services": ["internet"],
                "regions": ["north"],
                "message": "Engineers are on their way.",
                "now": "2026-03-01T09:00:00Z",
            },
        )
        assert r.status_code == 201, r.text
        inc = r.json()
        assert inc["affected"] == 6 and inc["status"] == "investigating" and len(inc["updates"]) == 1
        r = c.post(
            f"/v1/incidents/{inc['id']}/updates",
            json={"status": "identified", "message": "Fibre cut.", "eta": "2026-03-01T12:00:00Z"},
        )
        assert r.status_code == 201 and r.json()["seq"] == 1 and r.json()["queued"] == 6
        assert c.post("/v1/incidents", json={"title": "x", "services": ["nope"]}).status_code == 422
        assert c.post("/v1/incidents/999/updates", json={"message": "x"}).status_code == 404
        assert [i["id"] for i in c.get("/v1/incidents?status=open").json()] == [inc["id"]]
        assert c.get(f"/v1/incidents/{inc['id']}").json()["updates"][1]["message"] == "Fibre cut."

        data = c.get("/status.json").json()
        svc = {s["id"]: s for s in data["services"]}
        assert data["overall"] == "partial outage"
        assert svc["internet"]["state"] == "partial outage" and svc["tv"]["state"] == "operational"
        assert svc["internet"]["current"][0]["regions"] == ["north"]
        html = c.get("/status").text
        assert "Internet &lt;down&gt; in north" in html and "Fibre cut." in html  # escaped user input
        assert c.get("/status/internet").status_code == 200
        assert c.get("/status/nope").status_code == 404

        r = c.post(f"/v1/incidents/{inc['id']}/updates", json={"status": "resolved", "message": "Repaired."})
        assert r.json()["incident"]["status"] == "resolved"
        svc = {s["id"]: s for s in c.get("/status.json").json()["services"]}
        assert svc["internet"]["state"] == "operational" and svc["internet"]["past"][0]["id"] == inc["id"]
        assert "Past incidents (1" in c.get("/status/internet").text
        m = c.get(f"/v1/incidents/{inc['id']}/metrics").json()
        assert m["affected"] == 6 and m["notified"]["total"] == 18
        assert c.post(f"/v1/incidents/{inc['id']}/updates", json={"message": "late"}).status_code == 409


def test_only_recently_active_customers(ctx, api_headers) -> None:
    from datetime import UTC, datetime, timedelta

    import polars as pl

    seed_isp(ctx.engine)
    now = datetime(2026, 3, 1, 9, tzinfo=UTC)
    usage = pl.DataFrame(
        {
            "event_id": ["u1", "u2", "u3", "u4"],
            "customer_id": ["C00", "C02", "C01", "C04"],
            "ts": [
                now - timedelta(days=2),
                now - timedelta(days=29),
                now - timedelta(days=40),
                now + timedelta(days=1),
            ],
            "metric": ["data_gb"] * 4,
            "value": [1.0] * 4,
        }
    )
    ctx.signals.append("usage", usage)
    with TestClient(create_app(ctx), headers=api_headers) as c:
        r = c.post(
            "/v1/incidents",
            json={
                "title": "Down",
                "services": ["internet"],
                "regions": ["north"],
                "active_days": 30,
                "now": now.isoformat(),
            },
        )
        assert r.status_code == 201, r.text
        # C01 was last active 40 days ago; C04's usage is after ``now`` (not known yet)
        assert r.json()["affected"] == 2


def test_widen_and_resolve_endpoints(ctx, api_headers) -> None:
    seed_isp(ctx.engine)
    with TestClient(create_app(ctx), headers=api_headers) as c:
        inc = c.post(
            "/v1/incidents", json={"title": "Down", "services": ["internet"], "regions": ["north"]}
        ).json()
        r = c.post(
            f"/v1/incidents/{inc['id']}/scopes",
            json={"scopes": [{"service_id": "internet", "region": "east"}]},
        )
        assert r.status_code == 200 and r.json()["newly_affected"] == 3 and r.json()["queued"] == 3
        assert r.json()["incident"]["affected"] == 9
        r = c.post(f"/v1/incidents/{inc['id']}/resolve", json={"message": "Fixed."})
        assert r.json()["incident"]["status"] == "resolved" and r.json()["queued"] == 9
        assert (
            c.post(
                f"/v1/incidents/{inc['id']}/scopes", json={"regions": ["south"], "services": ["internet"]}
            ).status_code
            == 409
        )
        assert c.get("/v1/incidents/999").status_code == 404
        assert c.get("/v1/incidents?status=bogus").status_code == 422
