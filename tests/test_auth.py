"""Who may call what: a walk over every operation in the OpenAPI schema, and the token life cycle.

The walk reads the schema itself, so a route added without a declared scope, or without an example request
here, fails it: each scoped operation must answer 401 without a token, 403 with a token lacking its scope and
2xx with a token that has exactly that scope; each public operation must answer without a token.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.decide.unsubscribe import sign
from forewarn.state import audit, tokens
from forewarn.state.db import transaction, upgrade
from incident_helpers import seed_isp

EVENT = {
    "event_id": "a1",
    "customer_id": "C00",
    "ts": "2026-03-01T10:00:00Z",
    "metric": "data_gb",
    "value": 2.0,
}
NOW = "2026-03-01T10:00:00Z"
# One request per operation that succeeds on the seeded store below. Incident 1 is open; 2 is resolved by
# its own request (and nothing else touches it).
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/signals"): {"json": {"kind": "usage", "events": [EVENT]}},
    ("PUT", "/v1/customers"): {"json": [{"id": "C90", "timezone": "UTC"}]},
    ("PUT", "/v1/services"): {"json": [{"id": "phone", "name": "Phone"}]},
    ("PUT", "/v1/dependencies"): {"json": [{"customer_id": "C00", "service_id": "tv", "region": "north"}]},
    ("POST", "/v1/incidents"): {"json": {"title": "TV down", "services": ["tv"], "now": NOW}},
    ("GET", "/v1/incidents"): {},
    ("GET", "/v1/incidents/{incident_id}"): {"path": {"incident_id": 1}},
    ("GET", "/v1/incidents/{incident_id}/metrics"): {"path": {"incident_id": 1}},
    ("POST", "/v1/incidents/{incident_id}/updates"): {
        "path": {"incident_id": 1},
        "json": {"message": "Still on it.", "now": NOW},
    },
    ("POST", "/v1/incidents/{incident_id}/scopes"): {
        "path": {"incident_id": 1},
        "json": {"services": ["internet"], "regions": ["south"], "now": NOW},
    },
    ("POST", "/v1/incidents/{incident_id}/resolve"): {"path": {"incident_id": 2}},
    ("POST", "/v1/alertmanager"): {
        "json": {
            "version": "4",
            "groupKey": "g1",
            "status": "firing",
            "receiver": "forewarn",
            "groupLabels": {},
            "commonLabels": {"alertname": "Down", "service": "internet"},
            "commonAnnotations": {"summary": "Internet down"},
            "externalURL": "http://alertmanager:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "Down", "service": "internet", "region": "east"},
                    "annotations": {},
                    "startsAt": NOW,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": "f1",
                }
            ],
        }
    },
    ("GET", "/status.json"): {},
    ("GET", "/status"): {},
    ("GET", "/status/{service_id}.json"): {"path": {"service_id": "internet"}},
    ("GET", "/status/{service_id}"): {"path": {"service_id": "internet"}},
    ("GET", "/u/{token}"): {"path": {"token": "LINK"}},
    ("POST", "/u/{token}"): {"path": {"token": "LINK"}},
    ("GET", "/metrics"): {},
    ("GET", "/v1/metrics/outcomes"): {},
    ("GET", "/v1/metrics/overview"): {},
    ("GET", "/v1/metrics/incidents"): {},
    ("GET", "/v1/metrics/incidents/{incident_id}"): {"path": {"incident_id": 1}},
    ("GET", "/v1/metrics/findings"): {},
    ("GET", "/v1/metrics/customers/{customer_id}"): {"path": {"customer_id": "C00"}},
    ("GET", "/v1/metrics/outbox"): {},
    ("GET", "/v1/metrics/playbooks"): {},
    ("GET", "/v1/audit"): {},
    ("GET", "/v1/tickets/{ticket_id}"): {"path": {"ticket_id": 1}},
    ("PATCH", "/v1/tickets/{ticket_id}"): {
        "path": {"ticket_id": 1},
        "json": {"status": "pending", "at": NOW},
    },
    ("POST", "/v1/tickets/{ticket_id}/close"): {"path": {"ticket_id": 1}, "json": {"at": NOW}},
    ("GET", "/v1/customers/{customer_id}/export"): {"path": {"customer_id": "C00"}},
    ("DELETE", "/v1/customers/{customer_id}"): {"path": {"customer_id": "C99"}},  # unknown: found false, 200
    ("GET", "/healthz"): {},
}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    home = Path("/tmp/fw-auth-schema")  # building the schema opens no store
    schema = create_app(Context(Settings(home=home))).openapi()
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "patch", "delete")
    ]


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A seeded store behind the app, with one token per scope (``None``: no token)."""
    home = tmp_path_factory.mktemp("auth")
    url = f"sqlite:///{home / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=home, database_url=url))
    seed_isp(ctx.engine)
    made: dict[str, str] = {}
    with transaction(ctx.engine) as s:
        for scope in tokens.SCOPES:
            made[scope] = tokens.create(s, f"only {scope}", [scope], actor="cli:tests", rate_limit=0)[1]
    with TestClient(create_app(ctx)) as client:
        admin = {"Authorization": f"Bearer {made['admin']}"}
        for title in ("Internet down in the north", "Internet down in the east"):
            body = {"title": title, "services": ["internet"], "regions": ["north"], "now": NOW}
            assert client.post("/v1/incidents", json=body, headers=admin).status_code == 201
        contact = {"event_id": "k1", "customer_id": "C00", "ts": NOW, "channel": "email", "topic": "billing"}
        r = client.post("/v1/signals", json={"kind": "contact", "events": [contact]}, headers=admin)
        assert r.status_code < 300, r.text  # ticket 1, for the ticket routes
        yield ctx, client, made
    ctx.close()


def _call(world: Any, method: str, path: str, scope: str | None) -> Any:
    ctx, client, made = world
    example = EXAMPLES[(method, path)]
    url = path
    for name, value in example.get("path", {}).items():
        if value == "LINK":
            value = sign(ctx.secrets.links.current, "C01", "email", "outage")
        url = url.replace("{" + name + "}", str(value))
    headers = {"Authorization": f"Bearer {made[scope]}"} if scope else {}
    return client.request(method, url, json=example.get("json"), headers=headers)


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_operation_declares_its_scope_and_enforces_it(
    world: Any, method: str, path: str, op: dict
) -> None:
    scope = op.get("x-scope")
    assert scope is not None, (
        f"{method} {path} declares no scope: add `caller: Caller = requires(...)` or `dependencies=[PUBLIC]`"
    )
    assert (method, path) in EXAMPLES, f"add an example request for {method} {path} to EXAMPLES"
    if scope == "public":
        r = _call(world, method, path, None)
        assert 200 <= r.status_code < 300, (r.status_code, r.text)
        assert "security" not in op
        return
    assert scope in tokens.SCOPES and op["security"] == [{"HTTPBearer": []}]
    r = _call(world, method, path, None)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), r.text
    assert r.json()["detail"].startswith("missing API token")
    other = next(s for s in tokens.SCOPES if s not in (scope, "admin"))
    r = _call(world, method, path, other)
    assert r.status_code == 403 and scope in r.json()["detail"], r.text
    r = _call(world, method, path, scope)
    assert 200 <= r.status_code < 300, (r.status_code, r.text)


def test_every_example_is_still_a_route() -> None:
    assert set(EXAMPLES) == {(m, p) for m, p, _ in OPERATIONS}


def test_changes_are_audited_with_the_token_and_address(world: Any) -> None:
    ctx, client, made = world
    headers = {"Authorization": f"Bearer {made['incidents:write']}"}
    r = client.post(
        "/v1/incidents", json={"title": "Audit me", "services": ["tv"], "now": NOW}, headers=headers
    )
    assert r.status_code == 201
    incident = r.json()["id"]
    r = client.get(
        "/v1/audit",
        params={"target": f"incident:{incident}"},
        headers={"Authorization": f"Bearer {made['audit:read']}"},
    )
    assert r.status_code == 200
    (entry,) = r.json()
    with transaction(ctx.engine) as s:
        token_id = tokens.find(s, made["incidents:write"]).id
    assert (entry["actor"], entry["action"], entry["ip"]) == (
        f"token:{token_id}",
        "incident.opened",
        "testclient",
    )
    assert entry["detail"]["affected"] >= 1


def test_bad_unknown_revoked_and_expired_tokens(ctx: Context) -> None:
    with transaction(ctx.engine) as s:
        live, good = tokens.create(s, "live", ["incidents:read"], actor="cli:tests")
        _, gone = tokens.create(
            s, "short", ["incidents:read"], actor="cli:tests", expires_in=timedelta(seconds=1)
        )
    app = create_app(ctx)
    with TestClient(app) as client:

        def status(token: str) -> int:
            return client.get("/v1/incidents", headers={"Authorization": f"Bearer {token}"}).status_code

        assert status(good) == 200 and status(gone) == 200
        assert status(good[:-1] + ("A" if good[-1] != "A" else "B")) == 401
        assert status("not-even-a-token") == 401
        assert client.get("/v1/incidents", headers={"Authorization": f"Basic {good}"}).status_code == 401
        time.sleep(1.1)
        assert status(gone) == 401  # expired, though this process checked it a moment ago
        with transaction(ctx.engine) as s:
            tokens.revoke(s, live.id, actor="cli:tests")
        app.state.token_checker.forget()
        assert status(good) == 401
    with transaction(ctx.engine) as s:
        assert [e.action for e in audit.entries(s)] == ["token.revoked", "token.created", "token.created"]
        assert [t.name for t in tokens.all_tokens(s)] == ["short"]
        assert tokens.find(s, good) is None


def test_revocation_elsewhere_takes_effect_within_the_cache_time(tmp_path: Path, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    settings = Settings(home=tmp_path, database_url=sqlite_url)
    settings.api.token_cache_s = 0.2
    ctx = Context(settings)
    with transaction(ctx.engine) as s:
        row, token = tokens.create(s, "t", ["incidents:read"], actor="cli:tests")
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.get("/v1/incidents").status_code == 200
        other = Context(settings)  # another process: the CLI
        with transaction(other.engine) as s:
            tokens.revoke(s, row.id, actor="cli:tests")
        other.close()
        time.sleep(0.3)
        assert client.get("/v1/incidents").status_code == 401
    ctx.close()


def test_last_used_is_written_but_throttled(ctx: Context) -> None:
    with transaction(ctx.engine) as s:
        row, token = tokens.create(s, "t", ["incidents:read"], actor="cli:tests")
    statements: list[str] = []
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        sa.event.listen(ctx.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        for _ in range(20):
            assert client.get("/v1/incidents").status_code == 200
    seen = list(statements)
    assert sum("UPDATE api_tokens" in w for w in seen) == 1
    assert sum("FROM api_tokens" in w for w in seen) == 1  # checked once, then cached
    with transaction(ctx.engine) as s:
        assert s.get(type(row), row.id).last_used_at is not None


def test_unknown_scopes_are_refused_with_the_list(ctx: Context) -> None:
    with (
        pytest.raises(
            tokens.TokenError, match="unknown scope.*incidents:delete.*expected some of signals:write"
        ),
        transaction(ctx.engine) as s,
    ):
        tokens.create(s, "t", ["incidents:delete"], actor="cli:tests")
    with pytest.raises(ValueError, match="declare it"):
        from forewarn.api.auth import requires

        requires("everything:write")


def test_a_route_without_a_declared_scope_has_none_in_the_schema(tmp_path: Path) -> None:
    """What the walk above relies on: an undeclared route carries no ``x-scope`` (so the walk fails for it)."""
    app = create_app(Context(Settings(home=tmp_path)))

    @app.get("/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    paths = app.openapi()["paths"]
    assert "x-scope" not in paths["/v1/forgotten"]["get"]
    assert paths["/v1/incidents"]["get"]["x-scope"] == "incidents:read"
    assert paths["/status"]["get"]["x-scope"] == "public"
