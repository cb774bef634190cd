"""Shared fixtures: a fresh embedded home per test, and fresh state stores on SQLite and PostgreSQL.

PostgreSQL tests use ``FOREWARN_TEST_PG_URL`` (default: the local server at 127.0.0.1:5432, trust auth) and
skip with the reason when no server answers there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from api_helpers import admin_headers
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.state.db import upgrade

PG_URL = os.environ.get("FOREWARN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_admin() -> sa.Engine | None:
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return engine
    except sa.exc.OperationalError:
        engine.dispose()
        return None


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    engine = _pg_admin()
    if engine is None:
        if os.environ.get("FOREWARN_REQUIRE_PG"):
            pytest.fail(f"FOREWARN_REQUIRE_PG is set but no PostgreSQL server answers at {PG_URL}")
        pytest.skip(
            f"no PostgreSQL server at {PG_URL} (set FOREWARN_TEST_PG_URL to run the PostgreSQL suite)"
        )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"fw_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Settings for an embedded store under the test's own temporary folder."""
    upgrade(sqlite_url)
    # most tests write signals without loading customers first; the default (reject) has its own tests
    return Settings(home=tmp_path, database_url=sqlite_url, unknown_customers="create")


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = Context(settings)
    yield context
    context.close()


# ---- API tokens (forewarn.state.tokens): tests of the API that are not about who may call it use these ----


@pytest.fixture
def api_headers(ctx: Context) -> dict[str, str]:
    """An admin token's header on ``ctx``'s store: ``TestClient(create_app(ctx), headers=api_headers)``."""
    return admin_headers(ctx)


@pytest.fixture
def headers_for() -> Callable[[Context], dict[str, str]]:
    """:func:`admin_headers` for tests that make their own ``Context``."""
    return admin_headers


# ---- dashboard sign-in (forewarn.web.auth) -------------------------------------------------------------

DASHBOARD_PASSWORD = "a-test-password-long-enough"


def sign_in_client(client, engine: sa.Engine, role: str = "admin", username: str | None = None) -> str:  # noqa: ANN001
    """Create a dashboard user with ``role`` and sign ``client`` (a TestClient) in through the login form."""
    import re

    from forewarn.state import users

    username = username or f"{role}-user"
    if users.get_user(engine, username) is None:
        users.create_user(engine, username, role, password=DASHBOARD_PASSWORD)
    client.cookies.clear()  # sign out whoever was signed in
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post(
        "/login",
        data={"username": username, "password": DASHBOARD_PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return username


@pytest.fixture
def dashboard_login():
    """``dashboard_login(client, engine, role="admin")`` signs a TestClient in to the dashboard."""
    return sign_in_client


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    """A context (state store and signal store) on the embedded SQLite store and on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("ctx")
        return
    url = request.getfixturevalue("pg_url")
    upgrade(url)
    context = Context(Settings(home=tmp_path, database_url=url, unknown_customers="create"))  # as `ctx`
    yield context
    context.close()
