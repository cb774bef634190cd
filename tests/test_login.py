"""Dashboard sign-in over HTTP: sessions, roles, CSRF, rate-limited failures, the trusted proxy header, and
the ``forewarn users`` commands. (The same flows in a real browser: ``test_browser.py``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import DASHBOARD_PASSWORD, sign_in_client
from forewarn.api.app import create_app
from forewarn.cli import app as cli
from forewarn.config import get_settings
from forewarn.context import Context
from forewarn.deliver.outbox import enqueue
from forewarn.state import users
from forewarn.state.db import transaction
from forewarn.state.models import OutboxMessage, UserSession
from forewarn.web.auth import SESSION_COOKIE


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx), base_url="http://127.0.0.1:8000") as c:
        yield c


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client: TestClient, username: str, password: str) -> TestClient:
    token = csrf(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token, "next": "/outbox"},
        follow_redirects=False,
    )


def test_pages_need_a_session_and_htmx_gets_a_redirect_header(client: TestClient) -> None:
    r = client.get("/outbox?status=dead", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Foutbox%3Fstatus%3Ddead"
    r = client.get("/incidents?partial=1", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/login?next=")
    assert client.post("/outbox/1/retry", follow_redirects=False).status_code == 303  # to the sign-in page
    assert client.get("/static/forewarn.css").status_code == 200  # the sign-in page's stylesheet is public
    assert client.get("/login").status_code == 200
    forged = client.get("/", cookies={SESSION_COOKIE: "made-up"}, follow_redirects=False)
    assert forged.status_code == 303


def test_sign_in_sets_a_hardened_cookie_and_sign_out_ends_the_session(
    client: TestClient, ctx: Context
) -> None:
    users.create_user(ctx.engine, "ada", "viewer", password=DASHBOARD_PASSWORD)
    r = login(client, "ada", DASHBOARD_PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/outbox"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags  # plain http on loopback
    token = client.cookies[SESSION_COOKIE]
    with ctx.engine.connect() as conn:  # the store keeps a hash, never the token
        stored = conn.scalars(sa.select(UserSession.token_hash)).all()
    assert len(stored) == 1 and token not in stored[0]
    page = client.get("/outbox")
    assert page.status_code == 200 and "ada" in page.text
    assert (
        client.post("/logout", data={"csrf_token": csrf(page.text)}, follow_redirects=False).status_code
        == 303
    )
    # the old cookie is worth nothing once signed out, even when replayed
    r = client.get("/outbox", cookies={SESSION_COOKIE: token}, follow_redirects=False)
    assert r.status_code == 303


def test_cookie_is_secure_over_https_or_when_configured(ctx: Context) -> None:
    users.create_user(ctx.engine, "ada", "viewer", password=DASHBOARD_PASSWORD)
    with TestClient(create_app(ctx), base_url="https://forewarn.example") as c:
        cookie = login(c, "ada", DASHBOARD_PASSWORD).headers["set-cookie"]
        assert "secure" in cookie.lower()
    ctx.settings.auth.secure_cookies = True  # e.g. behind a proxy that ends TLS and forwards plain http
    with TestClient(create_app(ctx), base_url="http://127.0.0.1:8000") as c:
        assert "secure" in c.get("/login").headers["set-cookie"].lower()


def test_sessions_expire_on_the_server(client: TestClient, ctx: Context) -> None:
    sign_in_client(client, ctx.engine, "viewer")
    assert client.get("/", follow_redirects=False).status_code == 200
    assert users.expire_sessions(ctx.engine, "viewer-user") == 1  # the cookie itself is still in the browser
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_form_needs_its_csrf_value_and_a_local_next(client: TestClient, ctx: Context) -> None:
    users.create_user(ctx.engine, "ada", "viewer", password=DASHBOARD_PASSWORD)
    client.get("/login")
    r = client.post(
        "/login", data={"username": "ada", "password": DASHBOARD_PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 403  # a form posted from another site carries no matching value
    token = csrf(client.get("/login").text)
    data = {
        "username": "ada",
        "password": DASHBOARD_PASSWORD,
        "csrf_token": token,
        "next": "//evil.example/x",
    }
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_failed_sign_ins_are_rate_limited(client: TestClient, ctx: Context) -> None:
    users.create_user(ctx.engine, "ada", "viewer", password=DASHBOARD_PASSWORD)
    users.create_user(ctx.engine, "off", "viewer", password=DASHBOARD_PASSWORD)
    users.set_disabled(ctx.engine, "off")
    assert login(client, "off", DASHBOARD_PASSWORD).status_code == 401  # disabled
    assert login(client, "nobody", DASHBOARD_PASSWORD).status_code == 401
    for _ in range(5):
        r = login(client, "ada", "wrong password!!")
        assert r.status_code == 401 and "wrong password" in r.text
    r = login(client, "ada", DASHBOARD_PASSWORD)  # even the right password, until the window has passed
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 15 * 60
    assert SESSION_COOKIE not in client.cookies
    # per address too: another name from the same address is refused once the address has failed too often
    ctx.settings.auth.max_failures_per_address = 7
    assert login(client, "someone", "x" * 12).status_code == 429


@pytest.fixture
def dead_letter(ctx: Context) -> int:
    with transaction(ctx.engine) as s:
        enqueue(
            s,
            [
                dict(
                    idempotency_key="k1",
                    customer_id="c1",
                    channel="console",
                    topic="outage",
                    thread_key="t",
                    subject="s",
                    body="b",
                )
            ],
        )
        s.execute(sa.update(OutboxMessage).values(status="dead"))
        return s.scalar(sa.select(OutboxMessage.id))


def test_roles_viewer_reads_agent_acts_admin_manages_users(
    client: TestClient, ctx: Context, dead_letter: int
) -> None:
    sign_in_client(client, ctx.engine, "viewer")
    page = client.get("/outbox?status=dead")
    assert page.status_code == 200 and f"/outbox/{dead_letter}/retry" not in page.text  # no button
    r = client.post(
        f"/outbox/{dead_letter}/retry", data={"csrf_token": csrf(page.text)}, follow_redirects=False
    )
    assert r.status_code == 403 and "agent" in r.text
    assert client.get("/users").status_code == 403

    sign_in_client(client, ctx.engine, "agent")
    page = client.get("/outbox?status=dead")
    r = client.post(
        f"/outbox/{dead_letter}/retry", data={"csrf_token": csrf(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303 and "retried" in r.headers["location"]
    assert client.get("/users").status_code == 403

    sign_in_client(client, ctx.engine, "admin")
    page = client.get("/users")
    assert page.status_code == 200 and "agent-user" in page.text
    token = csrf(page.text)
    data = {"username": "bob", "role": "agent", "password": "short", "csrf_token": token}
    assert client.post("/users", data=data).status_code == 400  # too short a password: said, nothing stored
    assert users.get_user(ctx.engine, "bob") is None
    data["password"] = DASHBOARD_PASSWORD
    assert client.post("/users", data=data, follow_redirects=False).status_code == 303
    assert users.get_user(ctx.engine, "bob").role == "agent"
    assert (
        client.post("/users/bob/disable", data={"csrf_token": token}, follow_redirects=False).status_code
        == 303
    )
    assert users.get_user(ctx.engine, "bob").disabled


def test_trusted_proxy_header_only_from_trusted_addresses(ctx: Context) -> None:
    ctx.settings.auth.trusted_header = "X-Forwarded-User"
    ctx.settings.auth.trusted_proxies = ["10.0.0.0/24"]
    users.create_user(ctx.engine, "root", "admin")  # a proxy-only user with a role set by an admin
    app = create_app(ctx)
    with TestClient(app, client=("10.0.0.7", 5000), base_url="http://127.0.0.1:8000") as proxied:
        r = proxied.get("/users", headers={"X-Forwarded-User": "root"})
        assert r.status_code == 200 and "root" in r.text
        assert SESSION_COOKIE in proxied.cookies  # a server-side session, so CSRF works as for everyone
        r = proxied.get("/", headers={"X-Forwarded-User": "carol"}, follow_redirects=False)
        assert r.status_code == 200 and users.get_user(ctx.engine, "carol").role == "viewer"
        # the session follows the header: carol's cookie does not make her root
        assert proxied.get("/users", headers={"X-Forwarded-User": "carol"}).status_code == 403
    with TestClient(app, client=("192.0.2.9", 5000), base_url="http://127.0.0.1:8000") as direct:
        r = direct.get("/users", headers={"X-Forwarded-User": "root"}, follow_redirects=False)
        assert r.status_code == 303  # anyone can send the header; only the proxy is believed


def test_users_cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREWARN_HOME", str(ctx.settings.home))
    monkeypatch.setenv("FOREWARN_DATABASE_URL", ctx.settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(cli, ["users", "create", "ada", "--role", "agent", "--generate"])
        assert r.exit_code == 0, r.output
        password = re.search(r"shown once\): (\S+)", r.output).group(1)
        assert users.authenticate(ctx.engine, "ada", password, address="cli").role == "agent"
        r = runner.invoke(cli, ["users", "create", "ada", "--generate"])
        assert r.exit_code != 0 and "exists already" in r.output
        r = runner.invoke(cli, ["users", "create", "eve", "--role", "root", "--generate"])
        assert r.exit_code != 0 and "role must be one of" in r.output
        r = runner.invoke(cli, ["users", "create", "bo", "--password", "short"])
        assert r.exit_code != 0 and "at least 12" in r.output
        token = users.start_session(ctx.engine, users.get_user(ctx.engine, "ada"), timedelta(hours=1))
        assert runner.invoke(cli, ["users", "disable", "ada"]).exit_code == 0
        assert users.session_user(ctx.engine, token) is None  # disabling ends the sessions
        r = runner.invoke(cli, ["users", "list"])
        assert r.exit_code == 0 and "ada" in r.output and "disabled" in r.output
        assert runner.invoke(cli, ["users", "disable", "nobody"]).exit_code != 0
    finally:
        get_settings.cache_clear()
