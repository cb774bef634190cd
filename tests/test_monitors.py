"""Uptime monitors against real loopback HTTP and TCP servers."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from forewarn.incidents.monitors import Monitor, MonitorConfigError, MonitorRunner, check, load_monitors
from forewarn.incidents.service import get_incident
from forewarn.state.db import transaction
from incident_helpers import T0, outbox, seed_isp


class Backend:
    """A loopback HTTP server whose answer the test controls."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if backend.delay:
                    threading.Event().wait(backend.delay)
                body = b"ok"
                self.send_response(backend.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


def test_http_monitor_opens_after_n_failures_and_resolves_after_m_successes(ctx, backend) -> None:
    seed_isp(ctx.engine)
    m = Monitor(
        name="portal",
        type="http",
        url=backend.url,
        service="internet",
        regions=("north",),
        failures_to_open=3,
        successes_to_resolve=2,
        timeout_s=2,
        title="Portal down",
    )
    runner = MonitorRunner(ctx.engine, [m])
    t = [T0 + timedelta(seconds=30 * i) for i in range(10)]
    assert runner.run_round(now=t[0])[0].result.ok
    backend.status = 503
    actions = [runner.run_round(now=t[i])[0] for i in (1, 2, 3)]
    assert [a.action for a in actions] == [None, None, "opened"]
    assert actions[0].result.detail == "HTTP 503"
    incident_id = actions[2].incident_id
    with transaction(ctx.engine) as s:
        inc = get_incident(s, incident_id)
        assert inc.source == "monitor" and inc.started_at == t[1]  # the first failed check
    assert len(outbox(ctx.engine, incident_id)) == 6
    # a restarted runner picks the open incident up instead of opening another
    runner = MonitorRunner(ctx.engine, [m])
    assert runner.run_round(now=t[4])[0].action is None
    backend.status = 200
    out = [runner.run_round(now=t[i])[0].action for i in (5, 6, 7)]
    assert out == [None, "resolved", None]
    with transaction(ctx.engine) as s:
        inc = get_incident(s, incident_id)
        assert inc.status == "resolved" and inc.resolved_at == t[5]


def test_http_latency_and_tcp_checks(backend) -> None:
    backend.delay = 0.3
    slow = Monitor(name="slow", type="http", url=backend.url, service="x", max_latency_ms=100, timeout_s=2)
    r = check(slow)
    assert not r.ok and "slow" in r.detail
    backend.delay = 0
    timeout = Monitor(name="t", type="http", url=backend.url, service="x", timeout_s=0.1)
    backend.delay = 0.5
    assert "timed out" in check(timeout).detail

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    tcp = Monitor(name="dns", type="tcp", host="127.0.0.1", port=port, service="x", timeout_s=1)
    assert check(tcp).ok
    listener.close()
    assert not check(tcp).ok


def test_tcp_monitor_incident(ctx) -> None:
    seed_isp(ctx.engine)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens: connection refused
    m = Monitor(
        name="dns",
        type="tcp",
        host="127.0.0.1",
        port=port,
        service="tv",
        failures_to_open=2,
        successes_to_resolve=1,
        timeout_s=1,
    )
    runner = MonitorRunner(ctx.engine, [m])
    assert [runner.run_round(now=T0 + timedelta(minutes=i))[0].action for i in range(3)] == [
        None,
        "opened",
        None,
    ]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    try:
        assert runner.run_round(now=T0 + timedelta(minutes=5))[0].action == "resolved"
    finally:
        listener.close()


def test_config_files(tmp_path: Path) -> None:
    y = tmp_path / "monitors.yaml"
    y.write_text(
        "monitors:\n"
        "  - name: portal\n    type: http\n    url: https://portal.example/health\n    service: internet\n"
        "    regions: [north]\n    expect_status: [200]\n"
        "  - name: dns\n    type: tcp\n    host: 10.0.0.53\n    port: 53\n    service: internet\n"
    )
    ms = load_monitors(y)
    assert [m.name for m in ms] == ["portal", "dns"] and ms[0].regions == ("north",) and ms[1].port == 53
    t = tmp_path / "monitors.toml"
    t.write_text(
        '[[monitors]]\nname = "dns"\ntype = "tcp"\nhost = "h"\nport = 53\nservice = "internet"\n'
        "failures_to_open = 5\n"
    )
    assert load_monitors(t)[0].failures_to_open == 5

    y.write_text(
        "monitors:\n  - name: a\n    type: http\n    url: x\n    service: s\n"
        "  - name: b\n    type: tcp\n    host: h\n    port: 99999\n    service: s\n"
    )
    with pytest.raises(
        MonitorConfigError, match=r"monitors.yaml, line 2: monitors\[0\] \('a'\): field 'url'"
    ):
        load_monitors(y)
    y.write_text("monitors:\n  - name: b\n    type: tcp\n    host: h\n    port: 99999\n    service: s\n")
    with pytest.raises(MonitorConfigError, match=r"line 2: .*'port' is 99999; expected 1-65535"):
        load_monitors(y)
    y.write_text(
        "monitors:\n  - name: b\n    type: tcp\n    host: h\n    port: 53\n    service: s\n"
        "    interval_s: fast\n"
    )
    with pytest.raises(
        MonitorConfigError, match="'interval_s' is 'fast'; expected a positive number of seconds"
    ):
        load_monitors(y)
