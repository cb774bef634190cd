"""The dashboard in a real browser: Debian's headless chromium driven over the DevTools protocol.

A real uvicorn server on a free loopback port serves a seeded store; every page must load without console
errors, exceptions or failed requests, on a laptop-sized and a phone-sized screen. Screenshots are kept
under ``test-output/screenshots/``. A click-through opens an incident, sees its notified customers and opens
one customer's timeline; another retries a dead letter with its button.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import admin_headers
from conftest import DASHBOARD_PASSWORD
from forewarn.config import Settings
from forewarn.context import Context
from forewarn.sim import synthetic
from forewarn.state import users
from forewarn.state.db import upgrade

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "test-output" / "screenshots"
LAPTOP = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}

if not Path(CHROMIUM).exists():
    pytest.skip(
        "chromium is not installed (apt-get install chromium); the browser tests need it",
        allow_module_level=True,
    )
websockets_sync = pytest.importorskip(
    "websockets.sync.client", reason="the browser tests need the websockets package (the test extra)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CDP:
    """A minimal DevTools protocol client for one page: commands, and the events we care about."""

    def __init__(self, ws_url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            websockets_sync.connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=10)
        )
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout: float = 20, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e["method"] == method:
                return self.events.pop(i)
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.events.append(msg)

    def drain(self, seconds: float = 0.2) -> None:
        """Collect events that arrive in the next moment (late console messages)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                return
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def click_and_wait(self, selector: str) -> None:
        """Click the element (a link or a submit button) and wait for the next page to load."""
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        found = self.eval(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) return false; el.click(); return true; })()"
        )
        assert found, f"nothing matches {selector}"
        self.wait_for("Page.loadEventFired")

    def wait_until(self, expression: str, timeout: float = 15) -> None:
        """Poll a JavaScript condition until it holds (content htmx loads after the page)."""
        deadline = time.monotonic() + timeout
        while not self.eval(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout} s: {expression}")
            time.sleep(0.1)

    def settle(self) -> None:
        """Wait for parts loading after the page (marked aria-busy) to arrive."""
        self.wait_until("document.querySelector('[aria-busy=true]') === null")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far (and forget them)."""
        self.drain()
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails']}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"failed request: {p.get('errorText')}")
            elif e["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
                out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        self.events = []
        return out

    def screenshot(self, name: str) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)[
            "data"
        ]
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._stack.close()


API_HEADERS: dict[str, dict[str, str]] = {}


BROWSER_USER = "browser-admin"


def sign_in(
    browser: CDP, base: str, username: str = BROWSER_USER, password: str = DASHBOARD_PASSWORD
) -> None:
    """Sign in through the login page, unless this browser already has a session on ``base``.

    (Cookies are per host, not per port: the test servers on 127.0.0.1 share one cookie jar.)"""
    browser.goto(base + "/")
    if browser.eval("location.pathname") != "/login":
        return
    fill = (
        f"document.querySelector('input[name=username]').value = {json.dumps(username)};"
        f"document.querySelector('input[name=password]').value = {json.dumps(password)};"
    )
    browser.eval(fill)
    browser.click_and_wait("form.login button[type=submit]")
    assert browser.eval("location.pathname") == "/", "signing in failed"


@contextlib.contextmanager
def served(ctx: Context, home: Path) -> Iterator[str]:
    """``ctx``'s stores behind a real uvicorn (its base URL); afterwards the server, the stores and ``home``
    are gone."""
    base, srv, thread = serve(ctx)
    API_HEADERS[base] = admin_headers(ctx)  # for the JSON API calls below
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        ctx.close()
        shutil.rmtree(home, ignore_errors=True)


def serve(ctx: Context) -> tuple[str, Any, threading.Thread]:
    """uvicorn on a free loopback port, serving ``ctx``'s stores (with a dashboard admin, ``BROWSER_USER``)."""
    import uvicorn

    from forewarn.api.app import create_app

    if users.get_user(ctx.engine, BROWSER_USER) is None:
        users.create_user(ctx.engine, BROWSER_USER, "admin", password=DASHBOARD_PASSWORD)

    port = free_port()
    config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return base, srv, thread
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("uvicorn did not start")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A seeded store (synthetic history, 400 customers) behind a real uvicorn."""
    home = Path(tempfile.mkdtemp(prefix="fw-browser-"))
    url = f"sqlite:///{home / 'state.db'}"
    upgrade(url)
    ctx = Context(Settings(home=home, database_url=url))
    synthetic.build(ctx.engine, ctx.signals, customers=400, n_signals=30_000, days=60)
    with served(ctx, home) as base:
        yield base


@pytest.fixture(scope="module")
def demo_server() -> Iterator[str]:
    """``forewarn demo``'s data (a small simulated company run through every stage) behind a real uvicorn."""
    from forewarn.demo import DemoOptions, run_demo

    home = Path(tempfile.mkdtemp(prefix="fw-browser-demo-"))
    run_demo(DemoOptions(customers=300, days=60, home=home, backtest_days=20), serve=False)
    with served(Context(Settings(home=home)), home) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[CDP]:
    profile = tempfile.mkdtemp(prefix="fw-chromium-")
    port = free_port()
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ws_url = None
        for _ in range(150):
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=1).json()
                ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
                break
            except (httpx.HTTPError, StopIteration, ValueError):
                time.sleep(0.1)
        if ws_url is None:
            pytest.fail("chromium did not open its DevTools port")
        cdp = CDP(ws_url)
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", **LAPTOP)
        yield cdp
        cdp.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


PAGES = {
    "overview": "/",
    "incidents": "/incidents",
    "incident": "/incidents/1",
    "findings": "/findings",
    "customer": "/customers/C0000001",
    "outbox": "/outbox",
    "outbox-dead": "/outbox?status=dead",
    "playbooks": "/playbooks",
}


@pytest.mark.parametrize("device", ["laptop", "phone"])
def test_every_page_loads_without_errors(server: str, browser: CDP, device: str) -> None:
    sign_in(browser, server)
    browser.send("Emulation.setDeviceMetricsOverride", **(LAPTOP if device == "laptop" else PHONE))
    try:
        for name, path in PAGES.items():
            browser.goto(server + path)
            browser.settle()
            assert browser.eval("document.querySelector('h1') !== null"), f"{path} has no heading"
            assert browser.eval("typeof htmx") == "object", f"{path}: htmx did not load"
            assert browser.eval("document.documentElement.lang") == "en"
            # nothing wider than the screen except inside a scrolling table wrapper
            width = browser.eval("document.documentElement.scrollWidth")
            viewport = browser.eval("window.innerWidth")
            assert width <= viewport + 1, f"{path} is {width}px wide on a {viewport}px {device} screen"
            shot = browser.screenshot(f"{device}-{name}")
            assert shot.stat().st_size > 5000
            problems = browser.problems()
            assert problems == [], f"{path} on {device}: {problems}"
    finally:
        browser.send("Emulation.setDeviceMetricsOverride", **LAPTOP)


def test_form_controls_are_labelled_and_keyboard_reachable(server: str, browser: CDP) -> None:
    sign_in(browser, server)
    for path in ("/", "/outbox", "/findings"):
        browser.goto(server + path)
        unlabelled = browser.eval(
            "[...document.querySelectorAll('input:not([type=hidden]), select')]"
            ".filter(e => !e.closest('label') && !e.getAttribute('aria-label')).length"
        )
        assert unlabelled == 0, f"{path} has {unlabelled} unlabelled form controls"
    browser.goto(server + "/")
    browser.send("Input.dispatchKeyEvent", type="keyDown", key="Tab", code="Tab", windowsVirtualKeyCode=9)
    browser.send("Input.dispatchKeyEvent", type="keyUp", key="Tab", code="Tab", windowsVirtualKeyCode=9)
    assert browser.eval("document.activeElement.className") == "skip"  # first Tab: "Skip to content"
    assert browser.eval("document.querySelector('svg.chart[role=img] title') !== null")
    assert browser.problems() == []


def test_click_through_incident_to_customer_timeline(server: str, browser: CDP) -> None:
    sign_in(browser, server)
    browser.goto(server + "/incidents")
    first = browser.eval("document.querySelector('#incident-rows a').getAttribute('href')")
    browser.click_and_wait("#incident-rows a")
    assert browser.eval("location.pathname") == first
    notified = browser.eval(
        "[...document.querySelectorAll('#notified-customers tbody tr')]"
        ".filter(r => r.textContent.includes('sent')).length"
    )
    assert notified > 0, "the incident page lists no notified customers"
    progress = browser.eval("document.querySelector('#progress').getAttribute('hx-trigger')")
    assert progress.startswith("every"), "the notice progress is not polled"
    browser.screenshot("click-1-incident")
    name = browser.eval("document.querySelector('#notified-customers tbody tr a').textContent")
    browser.click_and_wait("#notified-customers tbody tr a")
    assert browser.eval("location.pathname").startswith("/customers/")
    assert browser.eval("document.querySelector('h1').textContent") == name
    browser.settle()  # the signals arrive after the page, through htmx
    kinds = browser.eval("[...document.querySelectorAll('#timeline .badge')].map(b => b.textContent)")
    assert "notice" in kinds, f"the timeline has no notice: {kinds}"
    assert "signal" in kinds, f"the timeline has no signals: {kinds}"
    browser.screenshot("click-2-customer")
    assert browser.problems() == []


def test_retry_a_dead_letter(server: str, browser: CDP) -> None:
    sign_in(browser, server)
    browser.goto(server + "/outbox?status=dead")
    before = browser.eval("document.querySelectorAll('tbody button').length")
    assert before > 0
    msg_id = browser.eval("document.querySelector('tbody tr td').textContent.trim()")
    browser.click_and_wait("tbody button")
    assert browser.eval("document.querySelector('.flash.ok').textContent").startswith(f"Message {msg_id}")
    ids = browser.eval(
        "[...document.querySelectorAll('tbody tr td:first-child')].map(t => t.textContent.trim())"
    )
    assert msg_id not in ids  # no longer dead
    status = httpx.get(
        f"{server}/v1/metrics/outbox",
        params={"status": "pending", "limit": 1000},
        headers=API_HEADERS[server],
    ).json()
    assert int(msg_id) in [m["id"] for m in status["messages"]]
    browser.screenshot("outbox-after-retry")
    assert browser.problems() == []


def test_sign_in_cookie_and_sign_out(server: str, browser: CDP) -> None:
    """The session cookie is HttpOnly and SameSite=Lax; a wrong password is refused; signing out ends it."""
    sign_in(browser, server)
    cookies = {c["name"]: c for c in browser.send("Network.getCookies", urls=[server])["cookies"]}
    session = cookies["forewarn_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]  # http on loopback
    assert "forewarn_session" not in browser.eval("document.cookie")  # page scripts cannot read it
    assert browser.eval("document.querySelector('.who').textContent").strip().startswith(BROWSER_USER)
    browser.click_and_wait(".who button")
    assert browser.eval("location.pathname") == "/login"
    browser.goto(server + "/outbox?status=dead")
    assert browser.eval("location.pathname + location.search") == "/login?next=%2Foutbox%3Fstatus%3Ddead"
    sign_in_form = (
        "document.querySelector('input[name=username]').value = 'browser-admin';"
        "document.querySelector('input[name=password]').value = 'not the password';"
    )
    browser.eval(sign_in_form)
    browser.click_and_wait("form.login button[type=submit]")
    assert "wrong password" in browser.eval("document.querySelector('.flash.warn').textContent")
    assert any("HTTP 401" in p for p in browser.problems())
    browser.eval(sign_in_form.replace("not the password", DASHBOARD_PASSWORD))
    browser.click_and_wait("form.login button[type=submit]")
    assert browser.eval("location.pathname + location.search") == "/outbox?status=dead"  # back where it was
    assert browser.problems() == []


def test_a_form_or_htmx_request_without_the_csrf_token_is_refused(server: str, browser: CDP) -> None:
    sign_in(browser, server)
    browser.goto(server + "/outbox?status=dead")
    dead = browser.eval(
        "[...document.querySelectorAll('tbody tr td:first-child')].map(t => t.textContent.trim())"
    )
    assert len(dead) >= 3, dead
    first, second, third = dead[:3]
    # the retry form with its hidden token removed, as a forged form would be: refused, nothing changes
    browser.eval("document.querySelector('tbody form input[name=csrf_token]').remove()")
    browser.click_and_wait("tbody button")
    assert "CSRF" in browser.eval("document.body.textContent")
    assert any("HTTP 403" in p for p in browser.problems())
    # a script posting with the session cookie but without the token (what another site could do): refused
    status = browser.eval(
        f"fetch('/outbox/{second}/retry', {{method: 'POST', credentials: 'include'}}).then(r => r.status)"
    )
    assert status == 403
    browser.problems()
    browser.goto(server + "/outbox?status=dead")
    still = browser.eval(
        "[...document.querySelectorAll('tbody tr td:first-child')].map(t => t.textContent.trim())"
    )
    assert first in still and second in still
    # htmx sends the token from hx-headers on <body>: the same action through htmx goes through
    browser.eval(
        f"new Promise(done => {{ document.body.addEventListener('htmx:afterRequest', done, {{once: true}});"
        f" htmx.ajax('POST', '/outbox/{third}/retry', {{source: document.body, swap: 'none'}}); }})"
    )
    browser.goto(server + "/outbox?status=dead")
    now = browser.eval(
        "[...document.querySelectorAll('tbody tr td:first-child')].map(t => t.textContent.trim())"
    )
    assert third not in now and first in now
    assert browser.problems() == []


def test_the_error_check_catches_errors(server: str, browser: CDP) -> None:
    """The checks above would fail on a broken page: console errors, exceptions and HTTP errors all count."""
    browser.goto("data:text/html,<script>console.error('boom'); undefinedFunction();</script>")
    problems = browser.problems()
    assert any("boom" in p for p in problems) and any("exception" in p for p in problems), problems
    sign_in(browser, server)
    browser.goto(server + "/incidents/999999")
    assert any("HTTP 404" in p for p in browser.problems())


def test_demo_data_pages_and_click_through(demo_server: str, browser: CDP) -> None:
    """The same checks against the data ``forewarn demo`` produces."""
    incidents = httpx.get(f"{demo_server}/v1/metrics/incidents", headers=API_HEADERS[demo_server]).json()[
        "incidents"
    ]
    assert incidents, "the demo opened no incidents"
    told = next((i for i in incidents if i["progress"]["delivered"]), incidents[0])
    sign_in(browser, demo_server)
    pages = ["/", "/incidents", f"/incidents/{told['id']}", "/findings", "/outbox", "/playbooks"]
    for path in pages:
        browser.goto(demo_server + path)
        browser.settle()
        assert browser.eval("document.querySelector('h1') !== null"), path
        browser.screenshot("demo-" + (path.strip("/").replace("/", "-") or "overview"))
        assert browser.problems() == [], path
    browser.goto(demo_server + f"/incidents/{told['id']}")
    browser.click_and_wait("#notified-customers tbody tr a")
    assert browser.eval("location.pathname").startswith("/customers/")
    browser.settle()
    kinds = browser.eval("[...document.querySelectorAll('#timeline .badge')].map(b => b.textContent)")
    assert "notice" in kinds and "signal" in kinds, kinds
    browser.screenshot("demo-customer")
    assert browser.problems() == []


def test_demo_numbers_add_up(demo_server: str, browser: CDP) -> None:
    """On the demo's data: delivered counts customers and never exceeds the affected; the control comparison
    shows a difference or says why there is none; At risk gives its reason; a silent customer's page has the
    usage chart; the status page shows times a person reads; the API docs render with no internet."""
    import re

    incidents = httpx.get(f"{demo_server}/v1/metrics/incidents", headers=API_HEADERS[demo_server]).json()[
        "incidents"
    ]
    assert incidents
    for inc in incidents:
        browser.goto(f"{demo_server}/incidents/{inc['id']}")
        meter = browser.eval("document.querySelector('#progress .meter').textContent")
        m = re.search(r"Delivered to ([\d,]+) of ([\d,]+) affected customers", " ".join(meter.split()))
        assert m, meter
        delivered, affected = (int(x.replace(",", "")) for x in m.groups())
        assert 0 < delivered <= affected, f"incident {inc['id']}: {meter}"
    browser.screenshot("numbers-incident")

    browser.goto(demo_server + "/")
    rows = browser.eval(
        "[...document.querySelectorAll('section[aria-labelledby=ctl-h] th[scope=rowgroup]')].map(t => t.innerText)"
    )
    assert rows, "the overview shows no control comparison"
    for text in rows:
        shows_diff = re.search(r"difference -?\d+\.\d%", text) and "0.0% (0.0% to 0.0%)" not in text
        assert shows_diff or "too early" in text or "no customer" in text, f"unexplained control row: {text}"
    browser.screenshot("numbers-overview")

    browser.goto(demo_server + "/findings")
    reasons = browser.eval(
        "[...document.querySelectorAll('#at-risk tbody tr td:last-child')].map(t => t.innerText)"
    )
    assert reasons and all(len(r) > 20 for r in reasons), reasons
    for r in reasons:  # nobody silent or away for LONG_GONE_DAYS or more is ranked as at risk
        days = re.search(r"for (\d+) days", r)
        assert not days or int(days.group(1)) < 90, r
    browser.screenshot("numbers-at-risk")

    findings = httpx.get(
        f"{demo_server}/v1/metrics/findings", params={"kind": "usage"}, headers=API_HEADERS[demo_server]
    ).json()["findings"]
    silent = next((f for f in findings if f["condition"].startswith("usage:silent")), None)
    assert silent is not None, "the demo has no silent customer to look at"
    browser.goto(f"{demo_server}/customers/{silent['customer_id']}")
    browser.settle()
    assert browser.eval("document.querySelectorAll('#story figure svg').length") > 0, "no usage chart"
    browser.screenshot("numbers-silent-customer")

    browser.goto(demo_server + "/status")
    text = browser.eval("document.body.innerText")
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d{3,}", text), "raw timestamps on the status page"
    assert re.search(r"Updated \d{1,2} \w{3} \d{4}, \d{2}:\d{2} UTC", text), text[-300:]

    browser.goto(demo_server + "/docs")
    browser.wait_until("document.querySelector('.swagger-ui .info .title') !== null")
    assert "forewarn" in browser.eval("document.querySelector('.swagger-ui .info .title').textContent")
    browser.screenshot("numbers-docs")
    assert browser.problems() == []
