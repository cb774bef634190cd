"""`forewarn demo`: the front door. A simulated ISP runs through every stage, on its own history's clock.

1. simulate a company (customers, services, signals, ground truth) into ``HOME/sim``;
2. migrate a fresh embedded state store and ingest the simulated files;
3. replay the service-health history: outages detected, incidents opened, affected customers notified,
   notices delivered, inbound contacts linked; contacts avoided against the simulator's no-notice baseline;
4. run every trip wire at the end of the history and print findings of each kind with their explanations;
5. decide on the findings with the example playbooks and their guardrails, deliver;
6. backtest the playbooks over the last weeks of history (text and an HTML report);
7. print the outcome metrics, then serve the API and dashboard (unless ``serve=False``).

Nothing leaves the machine: channels are files under ``HOME/deliveries`` (one JSON line per message).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from forewarn.config import Settings
from forewarn.context import Context

MARKER = ".forewarn-demo"
DEMO_CHANNELS = ("email", "sms", "push", "chat", "webhook")


@dataclass(frozen=True)
class DemoOptions:
    customers: int = 10_000
    days: int = 180
    seed: int = 7
    home: Path = Path(".forewarn/demo")
    backtest_days: int = 60


def examples_dir() -> Path:
    """The example playbooks shipped in the source tree (``examples/playbooks``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "playbooks"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "examples/playbooks not found: run the demo from a source checkout (pip install -e .)"
    )


def fresh_home(home: Path) -> Path:
    """Empty ``home`` for a new demo run; refuses to delete a folder that a demo did not create."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} exists and was not made by `forewarn demo`; choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("made by forewarn demo; deleted and rebuilt by the next demo run\n")
    return home


def file_channels(home: Path) -> dict[str, Any]:
    from forewarn.deliver.channels.console import FileChannel

    folder = home / "deliveries"
    folder.mkdir(parents=True, exist_ok=True)
    return {name: FileChannel(folder / f"{name}.jsonl") for name in DEMO_CHANNELS}


class Demo:
    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        self.o = options
        # wide enough for the tables when the output is not a terminal (CI logs, files)
        self.console = console or Console(width=None if Console().is_terminal else 160)
        self.summary: dict[str, Any] = {}

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        yield
        self.console.print(f"[dim]{title}: {time.perf_counter() - t0:.1f} s[/]")

    @contextmanager
    def bar(self, description: str) -> Iterator[Callable[..., None]]:
        """A progress bar for a slow stage (on a terminal only); yields ``update(done, total, label="")``."""
        if not self.console.is_terminal:
            yield lambda *args: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=None)

            def update(done: int, total: int, label: str = "") -> None:
                text = f"{description}: {label}" if label else description
                progress.update(task, completed=done, total=total, description=text)

            yield update

    def run(self) -> Context:
        from forewarn.state.db import upgrade

        home = fresh_home(self.o.home)
        settings = Settings(home=home, public_url="http://127.0.0.1:8000")
        upgrade(settings.database_url)
        ctx = Context(settings)
        with self.step(f"1. Simulate {self.o.customers:,} customers over {self.o.days} days"):
            world = self.simulate(home)
        with self.step("2. Ingest into the embedded stores"):
            self.ingest(ctx, home)
        channels = file_channels(home)
        from forewarn.deliver.worker import Worker

        worker = Worker(ctx, channels=channels)
        with self.step("3. Outages: detect, notify, link inbound contacts"):
            self.outages(ctx, worker, world.truth)
        end = world.config.end
        with self.step("4. Trip wires on each customer's own baseline"):
            self.detect(ctx, end)
        with self.step("5. Playbooks and guardrails"):
            self.decide(ctx, worker, end)
        worker.close()
        with self.step(f"6. Backtest the playbooks over the last {self.o.backtest_days} days"):
            self.backtest(ctx, world, home)
        with self.step("7. Outcomes"):
            self.outcomes(ctx, world.config.start, end)
        (home / "demo-summary.json").write_text(json.dumps(self.summary, indent=2, default=str))
        self.console.print(
            f"\nEverything is under [bold]{home}[/]: state.db, signals.duckdb, "
            "sim/ (with ground_truth.jsonl), deliveries/*.jsonl (every message as sent), "
            "backtests/ (HTML and JSON reports), playbooks/, demo-summary.json."
        )
        return ctx

    # -- the stages -------------------------------------------------------------------------------------

    def simulate(self, home: Path) -> Any:
        from forewarn.sim.config import SimConfig
        from forewarn.sim.world import simulate

        world = simulate(
            SimConfig(customers=self.o.customers, days=self.o.days, seed=self.o.seed), home / "sim"
        )
        counts = world.counts()
        self.summary["world"] = counts
        rows = ", ".join(f"{k} {v:,}" for k, v in counts["rows"].items())
        self.console.print(
            f"{counts['customers']:,} customers, {counts['services']} services; signals: {rows}"
        )
        truth = ", ".join(f"{k} {v:,}" for k, v in counts["truth"].items())
        self.console.print(f"ground truth (what the simulator injected): {truth}")
        return world

    def ingest(self, ctx: Context, home: Path) -> None:
        from forewarn.signals.ingest import ingest_paths

        report = ingest_paths(ctx, [home / "sim"], progress=True)
        new = sum(s.new for s in report.sources)
        rejected = sum(s.rejected for s in report.sources)
        self.summary["ingest"] = {"new": new, "rejected": rejected}
        self.console.print(f"{new:,} rows stored, {rejected:,} rejected")

    def outages(self, ctx: Context, worker: Any, truth: Any) -> None:
        from forewarn.measure.replay import replay_outages

        with self.bar("replaying the service health history") as bar:
            result = replay_outages(
                ctx,
                worker=worker,
                truth=truth,
                link_every=timedelta(minutes=15),
                progress=lambda done, total: bar(done, total),
            )
        table = Table(
            "incident",
            "started",
            "affected",
            "notified",
            "notice delivered after detection (p50)",
            "contacts before notice",
            "after",
            "linked",
            "avoided / baseline",
        )
        avoided = baseline = 0
        for inc in result.incidents:
            av = inc.get("contacts_avoided") or {}
            avoided += av.get("avoided", 0)
            baseline += av.get("contacts_without_notices", 0)
            ttn = (inc.get("time_to_first_delivered_s") or {}).get("p50")
            table.add_row(
                f"#{inc['incident_id']} {inc['title']}",
                str(inc.get("started_at", ""))[:16],
                f"{inc.get('affected', 0):,}",
                f"{inc['customers_notified']:,}",
                f"{ttn / 60:.0f} min" if ttn is not None else "-",
                str(inc["contacts_before_notice"]),
                str(inc["contacts_after_notice"]),
                str(inc.get("tickets_linked", 0)),
                f"{av.get('avoided', '-')} / {av.get('contacts_without_notices', '-')}" if av else "-",
            )
        self.console.print(table)
        self.console.print(
            f"{len(result.incidents)} incidents from service health; "
            f"{result.linked} inbound contacts linked and answered with the incident's status. "
            f"Contacts avoided by the notices: {avoided} of the {baseline} that the simulated customers "
            "would have made without them."
        )
        self.summary["outages"] = {
            "incidents": result.incidents,
            "linked": result.linked,
            "avoided": avoided,
            "baseline": baseline,
        }

    def detect(self, ctx: Context, end: Any) -> None:
        from forewarn.detect.registry import TRIP_WIRES
        from forewarn.detect.runner import run_detection
        from forewarn.measure.ops import record_run_report

        with self.bar("trip wires") as bar:
            wires = list(TRIP_WIRES)
            report = run_detection(
                ctx,
                as_of=end,
                examples=2,
                progress=lambda name: bar(
                    wires.index(name) + 1 if name in wires else 0, len(wires) + 1, name
                ),
            )
        record_run_report(report)  # shown on /metrics
        table = Table("trip wire", "firing", "opened", "example explanation")
        for w in report.wires:
            example = w.examples[0] if w.examples else (w.detail if hasattr(w, "detail") else "")
            table.add_row(w.name, f"{w.firing:,}", f"{w.opened:,}", example or "")
        self.console.print(table)
        self.summary["findings"] = {w.name: w.firing for w in report.wires}

    def decide(self, ctx: Context, worker: Any, end: Any) -> None:
        from forewarn.decide.engine import run_playbooks

        # the dashboard's playbooks page reads HOME/playbooks
        folder = ctx.settings.home / "playbooks"
        shutil.copytree(examples_dir(), folder, dirs_exist_ok=True)
        summary = run_playbooks(ctx, folder, as_of=end, now=end)
        # deliver on the history's clock, hour by hour through the next day, so that messages deferred by
        # quiet hours go out when the customer's morning comes (not at today's wall-clock time)
        sent = sum(worker.drain(now=end + timedelta(hours=h)) for h in range(26))
        table = Table("playbook", "decisions by status")
        for name, counts in sorted(summary.by_playbook.items()):
            table.add_row(name, ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
        self.console.print(table)
        guard = ", ".join(f"{k} {v:,}" for k, v in summary.by_guardrail.most_common())
        self.console.print(
            f"{summary.enqueued:,} outbox rows recorded; guardrails: {guard or 'none fired'}; "
            f"{sent:,} messages processed by the delivery worker"
        )
        self.summary["playbooks"] = summary.to_dict()

    def backtest(self, ctx: Context, world: Any, home: Path) -> None:
        from forewarn.decide.playbooks import load_playbooks
        from forewarn.measure.backtest import data_from_world, run_backtest
        from forewarn.measure.backtest_report import render_html, render_text

        end: date = (world.config.end - timedelta(days=1)).date()
        start = end - timedelta(days=self.o.backtest_days - 1)
        pset = load_playbooks(examples_dir())
        stages = [f"trip wire {k}" for k in sorted({p.when.kind for p in pset.active()})]
        stages.append("playbooks and guardrails")
        with self.bar("backtest") as bar:
            report = run_backtest(
                pset,
                data_from_world(world),
                start,
                end,
                settings=ctx.settings,
                progress=lambda name: bar(stages.index(name) if name in stages else 0, len(stages), name),
            )
        self.console.print(render_text(report, width=self.console.width))
        folder = home / "backtests"  # the dashboard's playbooks page lists these
        folder.mkdir(exist_ok=True)
        (folder / f"backtest-{start}-{end}.html").write_text(render_html(report))
        (folder / f"backtest-{start}-{end}.json").write_text(report.to_json())
        self.summary["backtest"] = report.overall

    def outcomes(self, ctx: Context, start: date, end: Any) -> None:
        from forewarn.measure.metrics import Period, outcome_metrics

        metrics = outcome_metrics(ctx.engine, Period.parse(start, end), signals=ctx.signals)
        self.summary["outcomes"] = metrics
        m = metrics
        c, n, av, rep = m["contacts"], m["notices"], m["avoidable_contacts"], m["repeat_contacts"]
        ttn, lead, dl = m["time_to_notify"], m["lead_time"], m["delivery"]
        table = Table("outcome", "value")
        table.add_row("inbound contacts", f"{c['total']:,} ({c['per_1000']:.1f} per 1,000 customers)")
        table.add_row("proactive notices sent", f"{n['sent']:,} to {n['customers']:,} customers")
        table.add_row(
            "avoidable contacts (about something already known)",
            f"{av['total']:,} ({_pct(av['share'])}): {av['before_notice']:,} before the customer was told, "
            f"{av['after_notice']:,} after",
        )
        table.add_row("repeat contacts (same topic, 7 days)", f"{rep['total']:,} ({_pct(rep['share'])})")
        table.add_row(
            "time to notify (incident start to first notice)",
            f"p50 {_dur(ttn['p50_s'])}, p95 {_dur(ttn['p95_s'])} over {ttn['count']} incidents",
        )
        table.add_row(
            "lead time (notice to the contact it anticipated)",
            f"p50 {_dur(lead['p50_s'])}, p95 {_dur(lead['p95_s'])} over {lead['count']:,} contacts",
        )
        table.add_row(
            "delivery", f"{_pct(dl['success_rate'])} delivered, latency p50 {_dur(dl['latency_p50_s'])}"
        )
        self.console.print(table)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def demo_admin(ctx: Context, console: Console, port: int) -> str:
    """An admin user with a fresh random password for the demo's dashboard (served on loopback only),
    printed once; returns the password."""
    from forewarn.state import users

    password = users.generate_password()
    if users.get_user(ctx.engine, "admin") is None:
        users.create_user(ctx.engine, "admin", "admin", password=password)
    else:
        users.set_password(ctx.engine, "admin", password)
    console.print(
        f"\nDashboard: http://127.0.0.1:{port}/  sign in as [bold]admin[/] with password [bold]{password}[/] "
        "(generated for this run; `forewarn users` manages users)"
    )
    return password


def run_demo(options: DemoOptions, *, serve: Callable[[Context], None] | None = None) -> None:
    """Run every stage on a simulated company, then hand the context to ``serve`` (the command line passes
    one that serves the API and dashboard; the demo itself does not import the command line)."""
    demo = Demo(options)
    ctx = demo.run()
    if serve:
        serve(ctx)
    ctx.close()
