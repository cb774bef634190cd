"""No default secrets: each store generates its own; the shipped ones are refused; rotation has a grace period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from forewarn.api.app import create_app
from forewarn.cli.serve import shipped_secret_problem
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.decide.unsubscribe import sign
from forewarn.deliver.channels.webhook import verify
from forewarn.deliver.outbox import enqueue
from forewarn.deliver.receivers import WebhookReceiver
from forewarn.deliver.worker import Worker
from forewarn.state import audit, secrets
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import Consent, Customer, StoredSecret

SHIPPED_LINK_SECRET = "forewarn-dev-secret-change-me"  # what forewarn's code signed links with before
SHIPPED_WEBHOOK_SECRET = "change-me"


def _with(settings: Settings, **configured: object) -> Settings:
    """``settings`` with these set as if configured (in the environment or the TOML file)."""
    return Settings(home=settings.home, database_url=settings.database_url, **configured)


def _customer(ctx: Context) -> None:
    with transaction(ctx.engine) as s:
        s.add(Customer(id="c1", email="a@example.org", timezone="UTC", channels=[], attributes={}))
        s.flush()
        s.add(Consent(customer_id="c1", channel="email", topic="billing", granted=True, source="import"))


def test_a_link_signed_with_the_shipped_default_is_refused(ctx: Context) -> None:
    _customer(ctx)
    assert ctx.secrets.links.current not in (SHIPPED_LINK_SECRET, SHIPPED_WEBHOOK_SECRET)
    with TestClient(create_app(ctx)) as client:
        forged = sign(SHIPPED_LINK_SECRET, "c1", "email", "billing")
        for r in (client.get(f"/u/{forged}"), client.post(f"/u/{forged}")):
            assert r.status_code == 400 and "signature" in r.text
        real = sign(ctx.secrets.links.current, "c1", "email", "billing")
        assert client.get(f"/u/{real}").status_code == 200
    with transaction(ctx.engine) as s:
        assert s.get(Consent, ("c1", "email", "billing")).granted  # the forged POST changed nothing


def test_each_store_generates_its_own_secrets(tmp_path: Path) -> None:
    rings = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        ctx = Context(Settings(home=tmp_path, database_url=url))
        rings.append(ctx.secrets)
        assert not ctx.secrets.shipped_defaults_in_use()
        ctx.close()
    assert rings[0].links.current != rings[1].links.current != rings[0].webhooks.current
    assert len(rings[0].links.current) >= 43  # 32 random bytes


def test_outbound_webhooks_are_not_signed_with_the_shipped_default(ctx: Context) -> None:
    _customer(ctx)
    with WebhookReceiver() as rx:
        ctx.settings.webhook.url = rx.url
        ctx.settings.delivery.quiet_hours_start = ctx.settings.delivery.quiet_hours_end = 0
        with transaction(ctx.engine) as s:
            enqueue(
                s,
                [
                    {
                        "idempotency_key": "k1",
                        "customer_id": "c1",
                        "channel": "webhook",
                        "topic": "billing",
                        "thread_key": "t1",
                        "subject": "s",
                        "body": "hi",
                    }
                ],
            )
        Worker(ctx, worker_id="t").run_once(now=datetime.now(UTC) + timedelta(seconds=1))
        (req,) = rx.received
    header = req.headers["x-forewarn-signature"]
    assert verify(req.body, ctx.secrets.webhooks.current, header)
    assert not verify(req.body, SHIPPED_WEBHOOK_SECRET, header)


def test_a_configured_secret_wins_and_serve_refuses_a_shipped_one_off_loopback(settings: Settings) -> None:
    own = Context(_with(settings, secret_key="our-own-long-random-secret"))
    assert own.secrets.links.current == "our-own-long-random-secret"
    assert shipped_secret_problem(own, "0.0.0.0") is None
    shipped = Context(_with(settings, secret_key=SHIPPED_LINK_SECRET))
    problem = shipped_secret_problem(shipped, "0.0.0.0")
    assert problem and "links" in problem and "FOREWARN_SECRET_KEY" in problem
    for loopback in ("127.0.0.1", "localhost", "::1"):
        assert shipped_secret_problem(shipped, loopback) is None
    generated = Context(settings)
    assert shipped_secret_problem(generated, "0.0.0.0") is None
    for c in (own, shipped, generated):
        c.close()


def test_serve_exits_before_listening_with_a_shipped_secret(settings: Settings) -> None:
    from forewarn.cli.serve import serve_forever

    ctx = Context(_with(settings, webhook={"secret": SHIPPED_WEBHOOK_SECRET}))
    with pytest.raises(SystemExit) as exit_info:
        serve_forever(ctx, "0.0.0.0", 1, worker=False)
    assert exit_info.value.code == 2
    ctx.close()


def test_rotation_keeps_old_links_working_for_the_grace_period(ctx: Context) -> None:
    _customer(ctx)
    old = ctx.secrets.links.current
    old_link = sign(old, "c1", "email", "billing")
    with transaction(ctx.engine) as s:
        ring = secrets.rotate(s, "links", timedelta(days=30), actor="cli:tests")
    ctx.reload_secrets()
    assert ctx.secrets.links.current == ring.current != old
    with TestClient(create_app(ctx)) as client:
        assert client.get(f"/u/{old_link}").status_code == 200  # within the grace period
        assert client.get(f"/u/{sign(ring.current, 'c1', 'email', 'billing')}").status_code == 200
        with transaction(ctx.engine) as s:  # the grace period ends
            row = s.get(StoredSecret, "links")
            row.previous_until = datetime.now(UTC) - timedelta(seconds=1)
        ctx.reload_secrets()
        assert client.get(f"/u/{old_link}").status_code == 400
    with transaction(ctx.engine) as s:
        (entry,) = audit.entries(s, action="secret.rotated")
        assert entry.target == "secret:links" and entry.detail == {"grace_s": 30 * 86400}
    with pytest.raises(ValueError, match="unknown secret"), transaction(ctx.engine) as s:
        secrets.rotate(s, "nope", timedelta(days=1), actor="cli:tests")


def test_a_configured_previous_secret_still_verifies(settings: Settings) -> None:
    ctx = Context(_with(settings, secret_key="new-one", previous_secret_key="old-one"))
    assert ctx.secrets.links.accepted() == ("new-one", "old-one")
    ctx.close()
