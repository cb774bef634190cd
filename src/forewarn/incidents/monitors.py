"""Built-in uptime monitors: HTTP(S) status and latency, TCP connect; N failures in a row open an incident,
M successes in a row resolve it.

Monitors are configured in a YAML or TOML file with a ``monitors`` list::

    monitors:
      - name: portal                  # unique; the incident's key is monitor:<name>
        type: http                    # http | tcp
        url: https://portal.example.net/health
        expect_status: [200, 204]     # default: any 2xx or 3xx
        max_latency_ms: 2000          # slower counts as a failure (optional)
        contains: "ok"                # the body must contain this (optional)
        service: internet             # the forewarn service it watches (required)
        regions: [north]              # default: every region
        interval_s: 30
        timeout_s: 5
        failures_to_open: 3
        successes_to_resolve: 2
        severity: major
        title: Internet portal unreachable
      - name: dns-north
        type: tcp
        host: 10.0.0.53
        port: 53
        service: internet
        regions: [north]

Errors name the file, the monitor (and its line in YAML), the field and what was expected.

>>> m = Monitor(name="web", type="http", service="internet", url="http://127.0.0.1:9/")
>>> m.key, m.failures_to_open, m.successes_to_resolve
('monitor:web', 3, 2)
"""

from __future__ import annotations

import socket
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import Engine

from forewarn.incidents.service import find_by_key, open_incident, resolve_incident, scopes_of
from forewarn.state.db import transaction
from forewarn.timeutil import utc


class MonitorConfigError(ValueError):
    """A monitors file that cannot be used; the message says where and what was expected."""


@dataclass(frozen=True)
class Monitor:
    name: str
    type: str
    service: str
    url: str | None = None
    host: str | None = None
    port: int | None = None
    regions: tuple[str, ...] = ()
    expect_status: tuple[int, ...] = ()
    max_latency_ms: float | None = None
    contains: str | None = None
    verify_tls: bool = True
    interval_s: float = 30.0
    timeout_s: float = 5.0
    failures_to_open: int = 3
    successes_to_resolve: int = 2
    severity: str = "major"
    title: str | None = None
    message: str | None = None

    @property
    def key(self) -> str:
        return f"monitor:{self.name}"

    @property
    def target(self) -> str:
        return self.url if self.type == "http" else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency_ms: float
    detail: str


_TYPES: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str) and v != "",
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "bool": lambda v: isinstance(v, bool),
}
_FIELD_KINDS = {
    "name": ("str", "a non-empty string"),
    "type": ("str", "http or tcp"),
    "service": ("str", "a service id"),
    "url": ("str", "an http:// or https:// URL"),
    "host": ("str", "a host name or address"),
    "port": ("int", "a port number (1-65535)"),
    "max_latency_ms": ("float", "a positive number of milliseconds"),
    "contains": ("str", "a non-empty string"),
    "verify_tls": ("bool", "true or false"),
    "interval_s": ("float", "a positive number of seconds"),
    "timeout_s": ("float", "a positive number of seconds"),
    "failures_to_open": ("int", "a positive integer"),
    "successes_to_resolve": ("int", "a positive integer"),
    "severity": ("str", "minor, major or critical"),
    "title": ("str", "a non-empty string"),
    "message": ("str", "a non-empty string"),
}


def _where(path: str, index: int, line: int | None, name: Any) -> str:
    at = f"{path}"
    if line is not None:
        at += f", line {line}"
    label = f" ({name!r})" if isinstance(name, str) else ""
    return f"{at}: monitors[{index}]{label}"


def parse_monitor(raw: dict[str, Any], *, where: str) -> Monitor:
    """One monitor from its mapping; ``where`` prefixes error messages."""
    if not isinstance(raw, dict):
        raise MonitorConfigError(f"{where}: expected a mapping of monitor fields")
    known = {f.name for f in fields(Monitor)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MonitorConfigError(
            f"{where}: unknown field {unknown[0]!r}; expected some of {', '.join(sorted(known))}"
        )
    for req in ("name", "type", "service"):
        if req not in raw:
            raise MonitorConfigError(f"{where}: field {req!r} is missing ({_FIELD_KINDS[req][1]})")
    values = dict(raw)
    for key, value in raw.items():
        if key in _FIELD_KINDS:
            kind, expected = _FIELD_KINDS[key]
            if not _TYPES[kind](value):
                raise MonitorConfigError(f"{where}: field {key!r} is {value!r}; expected {expected}")
    if values["type"] not in ("http", "tcp"):
        raise MonitorConfigError(f"{where}: field 'type' is {values['type']!r}; expected http or tcp")
    if values.get("severity", "major") not in ("minor", "major", "critical"):
        raise MonitorConfigError(
            f"{where}: field 'severity' is {values['severity']!r}; expected minor, major or critical"
        )
    if values["type"] == "http":
        url = values.get("url")
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise MonitorConfigError(f"{where}: field 'url' is {url!r}; expected an http:// or https:// URL")
    else:
        if "host" not in values or "port" not in values:
            raise MonitorConfigError(f"{where}: a tcp monitor needs 'host' and 'port'")
        if not 1 <= values["port"] <= 65535:
            raise MonitorConfigError(f"{where}: field 'port' is {values['port']!r}; expected 1-65535")
    regions = values.get("regions", [])
    if isinstance(regions, str):
        regions = [regions]
    if not (isinstance(regions, list) and all(isinstance(r, str) and r for r in regions)):
        raise MonitorConfigError(f"{where}: field 'regions' is {regions!r}; expected a list of region names")
    values["regions"] = tuple(regions)
    status = values.get("expect_status", [])
    if isinstance(status, int):
        status = [status]
    if not (isinstance(status, list) and all(isinstance(s, int) and 100 <= s <= 599 for s in status)):
        raise MonitorConfigError(f"{where}: field 'expect_status' is {status!r}; expected HTTP status codes")
    values["expect_status"] = tuple(status)
    return Monitor(**values)


def load_monitors(path: str | Path) -> list[Monitor]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) monitors file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MonitorConfigError(f"{path}: cannot read ({exc.strerror})") from None
    lines: list[int | None]
    if path.suffix == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MonitorConfigError(f"{path}: not valid TOML: {exc}") from None
        items = doc.get("monitors")
        lines = [None] * len(items) if isinstance(items, list) else []
    else:
        try:
            node = yaml.compose(text)
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise MonitorConfigError(f"{path}: not valid YAML: {exc}") from None
        items = doc.get("monitors") if isinstance(doc, dict) else None
        lines = []
        if isinstance(items, list) and isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == "monitors" and isinstance(v, yaml.SequenceNode):
                    lines = [item.start_mark.line + 1 for item in v.value]
    if not isinstance(items, list):
        raise MonitorConfigError(f"{path}: expected a top-level 'monitors' list")
    monitors = []
    for i, raw in enumerate(items):
        name = raw.get("name") if isinstance(raw, dict) else None
        monitors.append(
            parse_monitor(raw, where=_where(str(path), i, lines[i] if i < len(lines) else None, name))
        )
    names = [m.name for m in monitors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MonitorConfigError(
            f"{path}: monitor name {dupes[0]!r} is used more than once; names must be unique"
        )
    return monitors


def check(monitor: Monitor, client: httpx.Client | None = None) -> CheckResult:
    """Run one check now (real network I/O)."""
    start = time.perf_counter()
    if monitor.type == "tcp":
        try:
            with socket.create_connection((monitor.host, monitor.port), timeout=monitor.timeout_s):
                pass
        except OSError as exc:
            return CheckResult(False, (time.perf_counter() - start) * 1000, f"tcp connect failed: {exc}")
        ms = (time.perf_counter() - start) * 1000
        return _latency(monitor, ms, "tcp connect ok")
    own = client is None
    client = client or httpx.Client(verify=monitor.verify_tls, follow_redirects=False)
    try:
        response = client.get(monitor.url, timeout=monitor.timeout_s)
    except httpx.TimeoutException:
        return CheckResult(
            False, (time.perf_counter() - start) * 1000, f"timed out after {monitor.timeout_s} s"
        )
    except httpx.HTTPError as exc:
        return CheckResult(False, (time.perf_counter() - start) * 1000, f"request failed: {exc}")
    finally:
        if own:
            client.close()
    ms = (time.perf_counter() - start) * 1000
    code = response.status_code
    ok_code = code in monitor.expect_status if monitor.expect_status else 200 <= code < 400
    if not ok_code:
        return CheckResult(False, ms, f"HTTP {code}")
    if monitor.contains and monitor.contains not in response.text:
        return CheckResult(False, ms, f"HTTP {code} but the body lacks {monitor.contains!r}")
    return _latency(monitor, ms, f"HTTP {code}")


def _latency(monitor: Monitor, ms: float, detail: str) -> CheckResult:
    if monitor.max_latency_ms is not None and ms > monitor.max_latency_ms:
        return CheckResult(False, ms, f"{detail} but slow: {ms:.0f} ms > {monitor.max_latency_ms:.0f} ms")
    return CheckResult(True, ms, detail)


@dataclass
class MonitorState:
    failures: int = 0
    successes: int = 0
    first_failure_at: datetime | None = None
    first_success_at: datetime | None = None
    incident_id: int | None = None
    last: CheckResult | None = None
    next_due: float = 0.0


@dataclass(frozen=True)
class Outcome:
    monitor: str
    result: CheckResult
    action: str | None  # opened, resolved or None
    incident_id: int | None


@dataclass
class MonitorRunner:
    """Runs monitors against the state store; keeps streak counters in memory, incidents in the store."""

    engine: Engine
    monitors: Sequence[Monitor]
    state: dict[str, MonitorState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with transaction(self.engine) as s:
            for m in self.monitors:
                st = self.state.setdefault(m.name, MonitorState())
                inc = find_by_key(s, m.key)  # resume after a restart: an open incident stays ours
                if inc is not None and inc.status != "resolved":
                    st.incident_id = inc.id

    def record(self, monitor: Monitor, result: CheckResult, now: datetime | None = None) -> Outcome:
        """Count one check result; open or resolve the monitor's incident when a streak completes."""
        now = utc(now)
        st = self.state.setdefault(monitor.name, MonitorState())
        st.last = result
        action = None
        if result.ok:
            st.failures, st.first_failure_at = 0, None
            st.successes += 1
            st.first_success_at = st.first_success_at or now
            if st.incident_id is not None and st.successes >= monitor.successes_to_resolve:
                with transaction(self.engine) as s:
                    # resolved when it first answered again, announced once confirmed
                    resolve_incident(
                        s,
                        st.incident_id,
                        message=f"{monitor.title or monitor.service} is working again.",
                        now=st.first_success_at,
                    )
                action, st.incident_id = "resolved", None
        else:
            st.successes, st.first_success_at = 0, None
            st.failures += 1
            st.first_failure_at = st.first_failure_at or now
            if st.incident_id is None and st.failures >= monitor.failures_to_open:
                with transaction(self.engine) as s:
                    inc = open_incident(
                        s,
                        title=monitor.title or f"{monitor.service} unavailable",
                        scopes=scopes_of([monitor.service], monitor.regions),
                        message=monitor.message
                        or "We are investigating a problem and will update you shortly.",
                        severity=monitor.severity,
                        source="monitor",
                        external_key=monitor.key,
                        started_at=st.first_failure_at,  # the outage began at the first failed check
                        now=now,
                    )
                    st.incident_id = inc.id
                action = "opened"
        return Outcome(monitor.name, result, action, st.incident_id)

    def run_round(self, now: datetime | None = None, only_due: bool = False) -> list[Outcome]:
        """Check every monitor (or only those due) once and record the results."""
        outcomes = []
        clock = time.monotonic()
        with httpx.Client(follow_redirects=False) as client:
            for m in self.monitors:
                st = self.state.setdefault(m.name, MonitorState())
                if only_due and clock < st.next_due:
                    continue
                st.next_due = clock + m.interval_s
                result = check(m, client if m.verify_tls else None)
                outcomes.append(self.record(m, result, now))
        return outcomes

    def run_forever(self, stop: threading.Event, on_outcome: Callable[[Outcome], None] | None = None) -> None:
        """Check each monitor at its interval until ``stop`` is set."""
        while not stop.is_set():
            for outcome in self.run_round(only_due=True):
                if on_outcome:
                    on_outcome(outcome)
            due = min((st.next_due for st in self.state.values()), default=time.monotonic() + 1)
            stop.wait(max(0.05, due - time.monotonic()))
