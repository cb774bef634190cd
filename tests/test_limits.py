"""Request limits against a real uvicorn on loopback: body size (413), a stalled body (408), per-token rates (429).

Every refusal is JSON (``{"detail": ...}``) and stores nothing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from forewarn.api.app import create_app
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.state import tokens
from forewarn.state.db import transaction, upgrade

LIMIT = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Context, str]]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    api = {"max_body_bytes": LIMIT, "body_timeout_s": 0.5, "rate_burst": 3}
    ctx = Context(Settings(home=tmp_path, database_url=url, api=api, unknown_customers="create"))
    with transaction(ctx.engine) as s:
        _, token = tokens.create(s, "limited", ["signals:write"], actor="cli:tests", rate_limit=2)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield base, ctx, token
    srv.should_exit = True
    thread.join(timeout=10)
    ctx.close()


def _events(n: int) -> bytes:
    events = [
        {
            "event_id": f"e{i}",
            "customer_id": "c1",
            "ts": "2026-03-01T10:00:00Z",
            "metric": "data_gb",
            "value": 1,
        }
        for i in range(n)
    ]
    return json.dumps({"kind": "usage", "events": events}).encode()


def test_a_body_over_the_limit_is_413_and_stores_nothing(served: tuple[str, Context, str]) -> None:
    base, ctx, token = served
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    big = _events(400)
    assert len(big) > LIMIT
    r = httpx.post(f"{base}/v1/signals", content=big, headers=auth)
    assert r.status_code == 413 and "20,000 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = httpx.post(f"{base}/v1/signals", content=chunks(), headers=auth)
    assert r.status_code == 413 and r.json()["detail"].startswith("request body over the limit")
    time.sleep(0.6)  # the token's bucket refills
    small = _events(10)
    r = httpx.post(f"{base}/v1/signals", content=small, headers=auth)
    assert r.status_code == 200 and r.json()["new"] == 10
    assert ctx.signals.count("usage") == 10


def test_a_client_that_stalls_mid_body_gets_408(served: tuple[str, Context, str]) -> None:
    base, _, token = served
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = (
            f"POST /v1/signals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"kind": "usage", ')  # ... and nothing more
        started = time.monotonic()
        answer = b""
        while not answer.endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"detail":"no part of the request body arrived for 0.5 s"' in answer.replace(": ", ":")
    assert time.monotonic() - started < 3


def test_a_token_over_its_rate_gets_429_with_retry_after(served: tuple[str, Context, str]) -> None:
    base, _, token = served
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as http:
        codes = [http.post(f"{base}/v1/signals", json={"kind": "usage", "events": []}) for _ in range(6)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]  # the burst
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert "rate limit of 2 requests/s" in limited[0].json()["detail"]


def test_errors_are_json(served: tuple[str, Context, str]) -> None:
    base, _, token = served
    r = httpx.get(f"{base}/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = httpx.post(f"{base}/v1/signals", content=b"{", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
