"""`forewarn incidents` (open, update, widen, resolve, list, show, metrics, link, detect) and
`forewarn monitors` (check, run)."""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

# registers the incident templates' context with the delivery renderer, so `forewarn worker` (same CLI
# process) can render incident notices
import forewarn.incidents  # noqa: F401

console = Console()
incidents_app = typer.Typer(
    help="Open, update and resolve incidents; link contacts; detect from signals.", no_args_is_help=True
)
monitors_app = typer.Typer(
    help="Built-in uptime monitors (HTTP(S), TCP) from a YAML/TOML file.", no_args_is_help=True
)


def _time(value: str | None, option: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 time such as 2026-03-01T09:00:00Z", param_hint=option
        ) from None


def _ctx():
    from forewarn.context import Context

    return Context()


def _fail(exc: Exception) -> None:
    console.print(f"[red]error[/]: {exc}")
    raise typer.Exit(1)


def _audit(session: Any, action: str, incident_id: int, **detail: Any) -> None:
    from forewarn.state import audit

    audit.record(session, audit.cli_actor(), action, f"incident:{incident_id}", detail=detail)


def _scopes(service: list[str], region: list[str], scope: list[str]):
    from forewarn.incidents.service import Scope, scopes_of

    if scope:
        out = []
        for s in scope:
            svc, _, reg = s.partition(":")
            if not svc:
                raise typer.BadParameter(f"{s!r}: expected service[:region]", param_hint="--scope")
            out.append(Scope(svc, reg or "*"))
        return out
    return scopes_of(service, region)


@incidents_app.command("open")
def open_cmd(
    title: str = typer.Argument(..., help="Short public title, e.g. 'Internet outage in Gent'."),
    service: list[str] = typer.Option([], "--service", "-s", help="Affected service id (repeatable)."),  # noqa: B006
    region: list[str] = typer.Option([], "--region", "-r", help="Region (repeatable); none = all."),  # noqa: B006
    scope: list[str] = typer.Option([], "--scope", help="service:region pair (repeatable)."),  # noqa: B006
    message: str = typer.Option(None, "--message", "-m", help="Public message (default: the title)."),
    status: str = typer.Option("investigating", "--status"),
    severity: str = typer.Option("major", "--severity", help="minor, major or critical."),
    eta: str = typer.Option(None, "--eta", help="Expected fix time (ISO-8601)."),
    started_at: str = typer.Option(None, "--started-at", help="When it started (default: now)."),
    active_days: int = typer.Option(
        0,
        "--active-days",
        help="Only customers with usage in the N days before it started (kept for widening).",
    ),
    now: str = typer.Option(None, "--now", help="Event time, for replaying history (default: now)."),
) -> None:
    """Open an incident: compute the affected customers and queue their opening notices."""
    from forewarn.incidents.impact import ImpactFilter, affected_count, usage_activity
    from forewarn.incidents.service import IncidentError, open_incident
    from forewarn.state.db import transaction

    ctx = _ctx()
    t = _time(now, "--now")
    try:
        with transaction(ctx.engine) as s:
            inc = open_incident(
                s,
                title=title,
                scopes=_scopes(service, region, scope),
                message=message,
                status=status,
                severity=severity,
                eta=_time(eta, "--eta"),
                started_at=_time(started_at, "--started-at"),
                impact=ImpactFilter(active_days=active_days or None),
                activity=usage_activity(ctx),
                now=t,
            )
            n = affected_count(s, inc.id)
            _audit(s, "incident.opened", inc.id, affected=n)
    except IncidentError as exc:
        _fail(exc)
    console.print(f"incident [bold]{inc.id}[/] opened: {n:,} affected customers, opening notices queued")


@incidents_app.command("update")
def update_cmd(
    incident_id: int,
    message: str = typer.Option(..., "--message", "-m", help="The public update."),
    status: str = typer.Option(None, "--status", help="investigating, identified, monitoring, resolved."),
    eta: str = typer.Option(None, "--eta"),
    now: str = typer.Option(None, "--now"),
) -> None:
    """Post a public update; every affected customer gets it in their thread."""
    from forewarn.incidents.service import IncidentError, post_update
    from forewarn.state.db import transaction

    try:
        with transaction(_ctx().engine) as s:
            step = post_update(
                s,
                incident_id,
                message=message,
                status=status,
                eta=_time(eta, "--eta"),
                now=_time(now, "--now"),
            )
            _audit(s, "incident.updated", incident_id, status=status, queued=step.queued)
    except IncidentError as exc:
        _fail(exc)
    console.print(f"incident {incident_id}: update {step.seq} queued for {step.queued:,} customers")


@incidents_app.command("resolve")
def resolve_cmd(
    incident_id: int,
    message: str = typer.Option(None, "--message", "-m"),
    now: str = typer.Option(None, "--now"),
) -> None:
    """Resolve an incident and send the all-clear."""
    from forewarn.incidents.service import IncidentError, resolve_incident
    from forewarn.state.db import transaction

    try:
        with transaction(_ctx().engine) as s:
            step = resolve_incident(s, incident_id, message=message, now=_time(now, "--now"))
            _audit(s, "incident.resolved", incident_id, queued=step.queued)
    except IncidentError as exc:
        _fail(exc)
    console.print(f"incident {incident_id} resolved; all-clear queued for {step.queued:,} customers")


@incidents_app.command("widen")
def widen_cmd(
    incident_id: int,
    service: list[str] = typer.Option([], "--service", "-s"),  # noqa: B006
    region: list[str] = typer.Option([], "--region", "-r"),  # noqa: B006
    scope: list[str] = typer.Option([], "--scope"),  # noqa: B006
    now: str = typer.Option(None, "--now"),
) -> None:
    """Add services/regions; only newly affected customers are caught up."""
    from forewarn.incidents.impact import usage_activity
    from forewarn.incidents.service import IncidentError, widen
    from forewarn.state.db import transaction

    ctx = _ctx()
    try:
        with transaction(ctx.engine) as s:
            step = widen(
                s,
                incident_id,
                _scopes(service, region, scope),
                activity=usage_activity(ctx),
                now=_time(now, "--now"),
            )
            _audit(s, "incident.widened", incident_id, newly_affected=step.newly_affected)
    except IncidentError as exc:
        _fail(exc)
    console.print(
        f"incident {incident_id}: {step.newly_affected:,} newly affected, {step.queued:,} caught up"
    )


@incidents_app.command("list")
def list_cmd(
    status: str = typer.Option(None, "--status", help="'open' or a status."),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """Incidents, most recent first."""
    from forewarn.incidents.impact import affected_count
    from forewarn.incidents.service import IncidentError, list_incidents
    from forewarn.state.db import transaction

    table = Table("id", "status", "severity", "title", "scopes", "started", "resolved", "affected")
    try:
        with transaction(_ctx().engine) as s:
            for inc in list_incidents(s, status=status, limit=limit):
                scopes = ", ".join(f"{sc.service_id}:{sc.region}" for sc in inc.scopes)
                table.add_row(
                    str(inc.id),
                    inc.status,
                    inc.severity,
                    inc.title,
                    scopes,
                    inc.started_at.isoformat(timespec="minutes"),
                    inc.resolved_at.isoformat(timespec="minutes") if inc.resolved_at else "",
                    f"{affected_count(s, inc.id):,}",
                )
    except IncidentError as exc:
        _fail(exc)
    console.print(table)


@incidents_app.command("show")
def show_cmd(incident_id: int) -> None:
    """One incident with its updates and metrics, as JSON."""
    from forewarn.incidents.context import incident_view
    from forewarn.incidents.metrics import incident_metrics
    from forewarn.incidents.service import IncidentError, get_incident
    from forewarn.state.db import transaction

    try:
        with transaction(_ctx().engine) as s:
            view = incident_view(s, incident_id)
            view["updates"] = [
                {"seq": u.seq, "status": u.status, "message": u.message, "at": u.created_at}
                for u in get_incident(s, incident_id).updates
            ]
            view["metrics"] = incident_metrics(s, incident_id).as_dict()
    except (IncidentError, LookupError) as exc:
        _fail(exc)
    typer.echo(json.dumps(view, default=str, indent=2))


@incidents_app.command("link")
def link_cmd(now: str = typer.Option(None, "--now", help="Event time (default: now).")) -> None:
    """Link unlinked inbound contacts to the incidents that explain them and queue auto-replies."""
    from forewarn.incidents.link import link_tickets

    r = link_tickets(_ctx(), now=_time(now, "--now"))
    console.print(
        f"examined {r.examined:,} candidate contacts: {r.linked:,} linked, {r.replied:,} auto-replies queued"
    )


@incidents_app.command("detect")
def detect_cmd(
    as_of: str = typer.Option(None, "--as-of", help="Evaluate at this time (default: now)."),
) -> None:
    """Open/resolve incidents from service_metric anomalies (error rate up, traffic down)."""
    from forewarn.incidents.from_signals import sync_from_signals

    actions = sync_from_signals(_ctx(), as_of=_time(as_of, "--as-of"))
    for action, incident_id in actions:
        console.print(f"incident {incident_id} {action}")
    if not actions:
        console.print("no change")


@incidents_app.command("replay")
def replay_cmd(
    deliver: bool = typer.Option(False, "--deliver", help="Run the delivery worker on the history's clock."),
    truth: Path = typer.Option(
        None, "--truth", help="Simulator ground truth (ground_truth.jsonl) for contacts avoided."
    ),
    link_every_min: float = typer.Option(5.0, "--link-every", help="Minutes between reactive-link passes."),
) -> None:
    """Replay the stored service health: detect, open/widen/resolve, notify, deliver, link; print metrics."""
    from datetime import timedelta

    from forewarn.measure.replay import replay_outages

    ctx = _ctx()
    worker = None
    if deliver:
        from forewarn.deliver.worker import Worker

        worker = Worker(ctx)
    truth_frame = None
    if truth is not None:
        from forewarn.measure.truth import load

        truth_frame = load(truth)
    try:
        result = replay_outages(
            ctx, worker=worker, truth=truth_frame, link_every=timedelta(minutes=link_every_min)
        )
    finally:
        if worker is not None:
            worker.close()
    table = Table(
        "incident",
        "title",
        "affected",
        "sent",
        "suppressed",
        "p50 to delivered",
        "contacts before",
        "after",
        "linked",
        "avoided",
    )
    for r in result.incidents:
        avoided = r.get("contacts_avoided") or {}
        table.add_row(
            str(r["incident_id"]),
            r["title"],
            f"{r['affected']:,}",
            f"{r['notified']['sent']:,}",
            f"{r['notified']['suppressed']:,}",
            str(r["time_to_first_delivered_s"]["p50"]),
            str(r["contacts_before_notice"]),
            str(r["contacts_after_notice"]),
            str(r["tickets_linked"]),
            f"{avoided.get('avoided', '')} of {avoided.get('contacts_without_notices', '')}"
            if avoided
            else "",
        )
    console.print(table)
    typer.echo(json.dumps(result.incidents, default=str))


@monitors_app.command("check")
def monitors_check(config: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Run every monitor once and print the results (no incidents are opened)."""
    from forewarn.incidents.monitors import MonitorConfigError, check, load_monitors

    try:
        monitors = load_monitors(config)
    except MonitorConfigError as exc:
        _fail(exc)
    failed = 0
    for m in monitors:
        r = check(m)
        failed += not r.ok
        console.print(
            f"{'[green]ok[/]  ' if r.ok else '[red]FAIL[/]'} {m.name:<20} {m.target:<40} "
            f"{r.latency_ms:7.0f} ms  {r.detail}"
        )
    raise typer.Exit(1 if failed else 0)


@monitors_app.command("run")
def monitors_run(
    config: Path = typer.Argument(..., exists=True, dir_okay=False),
    once: bool = typer.Option(False, "--once", help="One round, then exit."),
) -> None:
    """Check monitors at their intervals; N failures open an incident, M successes resolve it."""
    from forewarn.incidents.monitors import MonitorConfigError, MonitorRunner, load_monitors

    try:
        monitors = load_monitors(config)
    except MonitorConfigError as exc:
        _fail(exc)
    runner = MonitorRunner(_ctx().engine, monitors)

    def show(o) -> None:
        if o.action or not o.result.ok:
            console.print(
                f"{o.monitor}: {o.result.detail}"
                + (f" -> incident {o.incident_id} {o.action}" if o.action else "")
            )

    if once:
        for o in runner.run_round():
            show(o)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"watching {len(monitors)} monitors (Ctrl-C stops)")
    runner.run_forever(stop, on_outcome=show)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.add_typer(incidents_app, name="incidents")
    app.add_typer(monitors_app, name="monitors")
