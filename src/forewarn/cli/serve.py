"""`forewarn serve`: the REST API, status page and dashboard, with a delivery worker in the same process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from forewarn.context import Context

if TYPE_CHECKING:
    from forewarn.cycle import CycleRunner

console = Console()


def shipped_secret_problem(ctx: Context, host: str) -> str | None:
    """Why serving on ``host`` must not start: a secret in force is one that shipped in forewarn's code (anyone
    could forge unsubscribe links or webhook signatures with it). Allowed on loopback, for development.

    >>> from forewarn.config import Settings
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> from forewarn.state.db import upgrade
    >>> upgrade(f"sqlite:///{d}/state.db")
    >>> ctx = Context(Settings(home=d, secret_key="forewarn-dev-secret-change-me"))
    >>> shipped_secret_problem(ctx, "127.0.0.1") is None, shipped_secret_problem(ctx, "0.0.0.0")[:40]
    (True, 'refusing to serve on 0.0.0.0: the links ')
    """
    if _is_loopback(host):
        return None
    shipped = ctx.secrets.shipped_defaults_in_use()
    if not shipped:
        return None
    settings = {"links": "FOREWARN_SECRET_KEY", "webhooks": "FOREWARN_WEBHOOK__SECRET"}
    return (
        f"refusing to serve on {host}: the {' and '.join(shipped)} secret is still the default that ships in "
        f"forewarn's code. Remove {' and '.join(settings[n] for n in shipped)} from the environment and config "
        "to use the one generated in the state store, or set your own random value."
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_forever(
    ctx: Context, host: str, port: int, *, worker: bool = True, worker_options: dict[str, Any] | None = None
) -> None:
    """Serve the app on ``host:port`` until interrupted; deliver the outbox in a background thread."""
    import uvicorn

    from forewarn.api.app import create_app
    from forewarn.deliver.worker import start_background_worker

    problem = shipped_secret_problem(ctx, host)
    if problem:
        console.print(f"[red]{problem}[/]")
        raise SystemExit(2)
    app = create_app(ctx)
    background = start_background_worker(ctx, **(worker_options or {})) if worker else None
    monitors = start_monitors(ctx)
    cycle = start_cycle(ctx)
    console.print(
        f"[bold]forewarn[/] serving on http://{host}:{port}  "
        f"(dashboard /, API docs /docs, status page /status, metrics /metrics)"
        + ("; delivery worker running" if background else "")
        + (f"; {monitors[1]} uptime monitors running" if monitors else "")
        + (f"; the live loop runs every {ctx.settings.cycle_every}" if cycle else "")
    )
    if not ctx.settings.auth.trusted_header and not _has_users(ctx):
        console.print(
            "[yellow]no dashboard users yet[/]: add one with "
            "`forewarn users create NAME --role admin --generate` (the API and status page work without)"
        )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if monitors:
            monitors[0].set()
        if cycle:
            cycle.stop()
        if background:
            background.stop()


def _has_users(ctx: Context) -> bool:
    from forewarn.state.users import list_users

    return bool(list_users(ctx.engine))


def start_cycle(ctx: Context) -> CycleRunner | None:
    """Run the live loop every ``settings.cycle_every`` in a daemon thread; ``.stop()`` it when done."""
    if ctx.settings.cycle_every is None:
        return None
    from forewarn.cycle import CycleRunner

    def log_pass(report: Any) -> None:
        failed = [f"{s.name}: {s.summary}" for s in report.stages if s.status == "error"]
        done = ", ".join(f"{s.name} {s.summary}" for s in report.stages if s.status == "ok" and s.summary)
        console.print(f"[dim]{report.now:%Y-%m-%d %H:%M:%S}[/] pass in {report.seconds:.1f} s: {done}")
        for line in failed:
            console.print(f"[red]  {line}[/]")

    return CycleRunner(ctx, ctx.settings.cycle_every, on_report=log_pass).start()


def start_monitors(ctx: Context) -> tuple[threading.Event, int] | None:
    """Run the uptime monitors of ``settings.monitors_file`` in a daemon thread; returns its stop event."""
    path = ctx.settings.monitors_file
    if path is None:
        return None
    from forewarn.incidents.monitors import MonitorRunner, load_monitors

    monitors = load_monitors(path)  # a bad file fails here, loudly, before serving
    stop = threading.Event()
    runner = MonitorRunner(ctx.engine, monitors)
    threading.Thread(target=runner.run_forever, args=(stop,), name="forewarn-monitors", daemon=True).start()
    return stop, len(monitors)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="address to bind"),
        port: int = typer.Option(8000, help="port to bind"),
        worker: bool = typer.Option(True, help="also run the delivery worker in this process"),
        monitors: Path | None = typer.Option(
            None, help="uptime monitors file (YAML/TOML) to run in the background (default: settings)"
        ),
        every: str | None = typer.Option(
            None,
            "--every",
            help="also run the live loop (detect, incidents, link, playbooks, digests) at this interval, "
            "e.g. 15m (default: settings.cycle_every; off when unset)",
        ),
    ) -> None:
        """Serve the REST API, the public status page and the dashboard."""
        from forewarn.timeutil import parse_duration

        ctx = Context()
        if monitors is not None:
            ctx.settings.monitors_file = monitors
        if every is not None:
            try:
                ctx.settings.cycle_every = parse_duration(every)
            except ValueError as e:
                raise typer.BadParameter(f"--every: {e}") from None
        serve_forever(ctx, host, port, worker=worker)
