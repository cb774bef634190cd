"""The proactive loop run live: one pass over every stage, and a timer that repeats it.

A pass at time ``now`` (the clock, or a replayed time):

1. ``detect``: the trip wires judge each customer's signals up to ``now`` and open, update or close findings
   (not when a metered feed is behind by more than ``settings.max_signal_lag``: that is reported as an error,
   since every customer would look silent);
2. ``incidents``: service-level signals open and resolve incidents (error rate up, traffic down); outages
   that were over more than ``LOOKBACK`` ago are history and announced to nobody;
3. ``link``: inbound contacts that an incident explains are linked to it and answered with its status (the
   answer to a contact older than ``LOOKBACK`` is recorded as suppressed: too late to help); tickets idle
   for ``ticket_idle_close`` are recorded as closed;
4. ``decide``: the playbooks decide on open findings and incidents, within the guardrails, into the outbox;
5. ``digests``: messages the fatigue budget folded away go out as a digest where the budget has room again.

The outbox worker (``forewarn worker``, or inside ``forewarn serve``) delivers what the pass queued. A stage that
fails is reported and the pass goes on: a broken trip wire must not hold back an outage reply. Every stage is
idempotent (one open finding per condition, idempotency keys on outbox rows), so a pass that runs twice, or
after a crash, sends nothing twice.

>>> from forewarn.config import Settings
>>> from forewarn.context import Context
>>> from forewarn.state.db import upgrade
>>> import tempfile
>>> ctx = Context(Settings(home=tempfile.mkdtemp()))
>>> upgrade(ctx.settings.database_url)
>>> report = run_cycle(ctx)
>>> [(s.name, s.status) for s in report.stages][:3]
[('detect', 'ok'), ('incidents', 'ok'), ('link', 'ok')]
>>> report.stages[3].status, report.ok
('skipped', True)
>>> ctx.close()
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from forewarn.context import Context
from forewarn.timeutil import utc

log = logging.getLogger("forewarn.cycle")

# how far back a pass still acts on what happened: an outage that ended, or a contact opened, longer ago is
# history (recorded, not announced), so a loop started on a store full of history does not message about it
LOOKBACK = timedelta(days=1)
# metered feeds that arrive continuously: when one stops, absence-based findings would fire for everyone
FEEDS = ("usage", "telemetry")


@dataclass
class StageResult:
    """What one stage of a pass did: ``ok``, ``skipped`` (with why) or ``error`` (with the message)."""

    name: str
    status: str = "ok"
    summary: str = ""
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class CycleReport:
    """One pass: when it ran and each stage's result, in order."""

    now: datetime
    stages: list[StageResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.status != "error" for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "stages": [
                {
                    "name": s.name,
                    "status": s.status,
                    "summary": s.summary,
                    "seconds": round(s.seconds, 3),
                    **s.detail,
                }
                for s in self.stages
            ],
        }


def stale_feeds(ctx: Context, now: datetime, max_lag: timedelta | None) -> list[str]:
    """The metered feeds (``FEEDS``) whose newest reading is more than ``max_lag`` before ``now``, described."""
    if max_lag is None:
        return []
    stale = []
    for kind in FEEDS:
        span = ctx.signals.time_range(kind)
        newest = None if span is None else utc(span[1])
        if newest is not None and now - newest > max_lag:
            stale.append(
                f"{kind}: newest reading {newest:%Y-%m-%d %H:%M} UTC, {_age(now - newest)} before this pass"
            )
    return stale


def _age(d: timedelta) -> str:
    hours = d.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def _detect(ctx: Context, now: datetime, playbooks: Path | None) -> StageResult:
    from forewarn.detect.runner import run_detection
    from forewarn.measure.ops import record_run_report

    stale = stale_feeds(ctx, now, ctx.settings.max_signal_lag)
    if stale:
        # judging now against a feed that stopped would make every customer look silent: a feed problem
        # is reported as one, not sent to thousands of customers as theirs
        return StageResult(
            "detect",
            "error",
            "signal feed behind, trip wires not run (" + "; ".join(stale) + ")",
            detail={"stale": stale},
        )
    report = run_detection(ctx, now)
    record_run_report(report)  # the serve process' /metrics shows each trip wire's latest run
    totals = {k: sum(getattr(w, k) for w in report.wires) for k in ("firing", "opened", "updated", "closed")}
    failed = [f"{w.name}: {w.message}" for w in report.wires if w.status == "error"]
    result = StageResult("detect", summary=", ".join(f"{v} {k}" for k, v in totals.items()), detail=totals)
    if failed:
        result.status, result.summary = "error", "; ".join(failed)
    return result


def _incidents(ctx: Context, now: datetime, playbooks: Path | None) -> StageResult:
    from forewarn.incidents.from_signals import sync_from_signals

    actions = sync_from_signals(ctx, as_of=now, since=now - LOOKBACK)
    opened = sum(a == "opened" for a, _ in actions)
    resolved = sum(a == "resolved" for a, _ in actions)
    summary = f"{opened} opened, {resolved} resolved, {len(actions) - opened - resolved} widened"
    return StageResult("incidents", summary=summary, detail={"actions": [list(a) for a in actions]})


def _link(ctx: Context, now: datetime, playbooks: Path | None) -> StageResult:
    from forewarn.incidents.link import link_tickets
    from forewarn.state.db import transaction
    from forewarn.state.tickets import close_idle_tickets

    r = link_tickets(ctx, now=now, reply_max_age=LOOKBACK)
    with transaction(ctx.engine) as s:
        idle = close_idle_tickets(s, now=now, idle=ctx.settings.ticket_idle_close)
    return StageResult(
        "link",
        summary=f"{r.linked} linked, {r.replied} answered, {idle} idle tickets closed",
        detail={"linked": r.linked, "replied": r.replied, "idle_closed": idle},
    )


def _decide(ctx: Context, now: datetime, playbooks: Path | None) -> StageResult:
    from forewarn.decide.engine import run_playbooks

    if playbooks is None:
        return StageResult("decide", "skipped", no_playbooks(ctx))
    summary = run_playbooks(ctx, playbooks, as_of=now, now=now).to_dict()
    return StageResult("decide", summary=f"{summary['enqueued']} queued", detail={"playbooks": summary})


def _digests(ctx: Context, now: datetime, playbooks: Path | None) -> StageResult:
    from forewarn.decide.digest import send_digests

    if playbooks is None:
        return StageResult("digests", "skipped", no_playbooks(ctx))
    n = send_digests(ctx, str(playbooks), now=now)
    return StageResult("digests", summary=f"{n} queued", detail={"queued": n})


_RUNNERS: dict[str, Callable[[Context, datetime, Path | None], StageResult]] = {
    "detect": _detect,
    "incidents": _incidents,
    "link": _link,
    "decide": _decide,
    "digests": _digests,
}
STAGES = tuple(_RUNNERS)  # the order of a pass


def playbooks_folder(ctx: Context) -> Path | None:
    """The playbooks the loop runs: ``settings.playbooks_path`` when it holds any YAML, else None."""
    path = ctx.settings.playbooks_path
    if path.is_file() or (path.is_dir() and any(path.glob("*.y*ml"))):
        return path
    return None


def no_playbooks(ctx: Context) -> str:
    """Why deciding was skipped: where the pass looked, and how to point it elsewhere."""
    return (
        f"no playbook YAML at {ctx.settings.playbooks_path}; give the folder (`forewarn run playbooks/`) "
        "or set FOREWARN_PLAYBOOKS_PATH"
    )


def run_cycle(ctx: Context, now: datetime | None = None, stages: tuple[str, ...] = STAGES) -> CycleReport:
    """Run ``stages`` of one pass at ``now`` (default: the clock); see the module docstring."""
    now = utc(now)
    playbooks = playbooks_folder(ctx)
    report = CycleReport(now=now)
    started = time.perf_counter()
    for name in stages:
        t0 = time.perf_counter()
        try:
            result = _RUNNERS[name](ctx, now, playbooks)
        except Exception as e:  # one stage's failure must not stop the others
            log.error("cycle stage %s failed:\n%s", name, traceback.format_exc())
            result = StageResult(name, "error", f"{type(e).__name__}: {e}")
        result.seconds = time.perf_counter() - t0
        report.stages.append(result)
    report.seconds = time.perf_counter() - started
    return report


class CycleRunner:
    """Runs :func:`run_cycle` every ``every`` until stopped (a pass that overruns starts the next at once).

    ``on_report`` receives each pass' report (``forewarn run`` prints it; ``serve`` logs it).
    """

    def __init__(
        self,
        ctx: Context,
        every: timedelta,
        on_report: Callable[[CycleReport], None] | None = None,
        stages: tuple[str, ...] = STAGES,
    ) -> None:
        if every <= timedelta(0):
            raise ValueError(f"the cycle interval must be positive, got {every}")
        self.ctx, self.every, self.on_report, self.stages = ctx, every, on_report, stages
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            report = run_cycle(self.ctx, stages=self.stages)
            self.passes += 1
            if self.on_report is not None:
                self.on_report(report)
            stop.wait(max(0.0, self.every.total_seconds() - (time.monotonic() - started)))

    def start(self) -> CycleRunner:
        """Run in a daemon thread until :meth:`stop`."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name="forewarn-cycle", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the current pass and wait (up to ``timeout`` s) for it to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
