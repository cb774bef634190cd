"""`forewarn tokens create/list/revoke` and `forewarn secrets rotate`: the token is printed once, only its hash
is stored, and each change is in the audit log as the command line's user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from forewarn.api.app import create_app
from forewarn.cli import app
from forewarn.config import get_settings
from forewarn.context import Context
from forewarn.state import audit, tokens
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import ApiToken


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FOREWARN_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # the token table on one line
    get_settings.cache_clear()
    upgrade(get_settings().database_url)
    yield tmp_path
    get_settings.cache_clear()


def test_create_list_revoke(home: Path) -> None:
    run = CliRunner().invoke
    made = run(
        app,
        [
            "tokens",
            "create",
            "billing job",
            "-s",
            "signals:write",
            "-s",
            "incidents:read",
            "--expires",
            "90d",
        ],
    )
    assert made.exit_code == 0, made.output
    token = next(line for line in made.output.splitlines() if line.startswith("fw_"))
    ctx = Context()
    with transaction(ctx.engine) as s:
        (row,) = s.query(ApiToken).all()
        assert row.token_hash == tokens.hash_token(token) and token not in repr(vars(row))
        assert (row.expires_at - row.created_at).days == 90
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.get("/v1/incidents").status_code == 200
        listed = run(app, ["tokens", "list"])
        assert listed.exit_code == 0 and "billing job" in listed.output and token not in listed.output
        assert token[:10] in listed.output
        assert run(app, ["tokens", "revoke", str(row.id)]).exit_code == 0
        client.app.state.token_checker.forget()  # (another process: this one would see it within seconds)
        assert client.get("/v1/incidents").status_code == 401
    assert "billing job" not in run(app, ["tokens", "list"]).output
    assert "billing job" in run(app, ["tokens", "list", "--all"]).output
    bad = run(app, ["tokens", "create", "x", "-s", "everything"])
    assert bad.exit_code == 2 and "unknown scope(s): everything" in bad.output
    assert run(app, ["tokens", "revoke", "999"]).exit_code == 2
    with transaction(ctx.engine) as s:
        actions = [(e.action, e.actor.startswith("cli:")) for e in audit.entries(s)]
    assert actions == [("token.revoked", True), ("token.created", True)]
    ctx.close()


def test_rotate_a_secret(home: Path) -> None:
    ctx = Context()
    before = ctx.secrets.links.current
    out = CliRunner().invoke(app, ["secrets", "rotate", "links", "--grace", "7d"])
    assert out.exit_code == 0, out.output
    ctx.reload_secrets()
    assert ctx.secrets.links.current != before and ctx.secrets.links.previous == before
    assert CliRunner().invoke(app, ["secrets", "rotate", "passwords"]).exit_code == 2
    ctx.close()
