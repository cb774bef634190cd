"""Unsubscribe links end to end: the link in a message, through a real HTTP server, stops the next one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from forewarn.api.app import create_app
from forewarn.context import Context
from forewarn.decide.engine import run_playbooks
from forewarn.decide.playbooks import load_playbooks
from forewarn.decide.unsubscribe import BadToken, sign, verify
from forewarn.state.db import transaction
from forewarn.state.models import Consent, Customer, Finding, OutboxMessage

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PLAYBOOKS = """
playbooks:
  - name: drop
    mode: live
    when: {kind: usage}
    then:
      - notify: {channels: [email], template: playbook_usage}
    cooldown: 0s
    expiry: 30d
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(ctx: Context) -> Iterator[str]:
    """The real app on a real uvicorn server on loopback."""
    port = _free_port()
    ctx.settings.public_url = f"http://127.0.0.1:{port}"
    srv = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield ctx.settings.public_url
    srv.should_exit = True
    thread.join(5)


def _finding(cid: str, condition: str, at: datetime) -> Finding:
    return Finding(
        customer_id=cid,
        kind="usage",
        condition=condition,
        score=5.0,
        confidence=0.9,
        explanation="Your data use dropped.",
        evidence={},
        first_detected_at=at,
        last_detected_at=at,
    )


def _messages(ctx: Context, cid: str) -> list[OutboxMessage]:
    with transaction(ctx.engine) as s:
        q = select(OutboxMessage).where(OutboxMessage.customer_id == cid).order_by(OutboxMessage.id)
        return list(s.execute(q).scalars())


def test_unsubscribe_link_stops_the_next_message(ctx: Context, server: str, tmp_path: Path) -> None:
    pb_file = tmp_path / "pb.yaml"
    pb_file.write_text(PLAYBOOKS)
    pset = load_playbooks(pb_file)
    with transaction(ctx.engine) as s:
        s.add(
            Customer(id="c1", name="Ana", email="ana@example.com", timezone="UTC", channels=[], attributes={})
        )
        s.flush()
        s.add(_finding("c1", "usage:drop:data_gb", NOW - timedelta(hours=1)))
    run_playbooks(ctx, pset, as_of=NOW, now=NOW)
    [first] = _messages(ctx, "c1")
    assert first.status == "pending" and first.channel == "email"
    link = first.payload["unsubscribe_url"]
    assert link.startswith(server + "/u/")

    with httpx.Client(timeout=10) as http:
        page = http.get(link)
        assert page.status_code == 200
        assert "Unsubscribe" in page.text and "<strong>usage</strong> messages by email" in page.text
        assert 'method="post"' in page.text
        # GET alone changes nothing
        with transaction(ctx.engine) as s:
            assert s.get(Consent, ("c1", "email", "usage")) is None
        done = http.post(link, data={"scope": "topic"})
        assert done.status_code == 200 and "You are unsubscribed" in done.text

    with transaction(ctx.engine) as s:  # recorded at once
        row = s.get(Consent, ("c1", "email", "usage"))
        assert row is not None and row.granted is False and row.source == "unsubscribe-link"

    # the next message on that channel and topic does not go out, and says why
    with transaction(ctx.engine) as s:
        s.add(_finding("c1", "usage:spike:data_gb", NOW + timedelta(days=1)))
    run_playbooks(ctx, pset, as_of=NOW + timedelta(days=1), now=NOW + timedelta(days=1, hours=1))
    second = _messages(ctx, "c1")[-1]
    assert second.payload["condition"] == "usage:spike:data_gb"
    assert second.status == "suppressed" and "no consent" in second.reason


def test_one_click_post_all_topics_and_bad_links(ctx: Context, server: str) -> None:
    with transaction(ctx.engine) as s:
        s.add(Customer(id="c2", email="b@example.com", timezone="UTC", channels=[], attributes={}))
        s.flush()
        s.add(Consent(customer_id="c2", channel="email", topic="billing", granted=True, source="import"))
    token = sign(ctx.secrets.links.current, "c2", "email", "billing")
    with httpx.Client(timeout=10) as http:
        # RFC 8058 one-click: a POST without the form field, scope "all" via the form stops every topic
        assert http.post(f"{server}/u/{token}").status_code == 200
        assert http.post(f"{server}/u/{token}", data={"scope": "all"}).status_code == 200
        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        bad = http.get(f"{server}/u/{tampered}")
        assert bad.status_code == 400 and "signature" in bad.text
        forged = sign("not-our-secret", "c2", "email", "billing")
        assert http.post(f"{server}/u/{forged}").status_code == 400
        unknown = sign(ctx.secrets.links.current, "nobody", "email", "billing")
        assert http.post(f"{server}/u/{unknown}").status_code == 404
    with transaction(ctx.engine) as s:
        rows = {(c.topic, c.granted, c.source) for c in s.execute(select(Consent)).scalars()}
    assert rows == {("billing", False, "unsubscribe-link"), ("*", False, "unsubscribe-link")}


def test_tokens() -> None:
    t = sign("k", "c:1/é", "sms", "*")
    assert verify("k", t).customer_id == "c:1/é"
    for broken in ("", "abc", ".sig", t.split(".")[0] + "."):
        with pytest.raises(BadToken):
            verify("k", broken)
