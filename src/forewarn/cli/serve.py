"""`forewarn serve`: the REST API, status page and dashboard, with a delivery worker in the same process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from forewarn.context import Context

console = Console()


def serve_forever(
    ctx: Context, host: str, port: int, *, worker: bool = True, worker_options: dict[str, Any] | None = None
) -> None:
    """Serve the app on ``host:port`` until interrupted; deliver the outbox in a background thread."""
    import uvicorn

    from forewarn.api.app import create_app
    from forewarn.deliver.worker import start_background_worker

    app = create_app(ctx)
    background = start_background_worker(ctx, **(worker_options or {})) if worker else None
    monitors = start_monitors(ctx)
    console.print(
        f"[bold]forewarn[/] serving on http://{host}:{port}  "
        f"(dashboard /, API docs /docs, status page /status, metrics /metrics)"
        + ("; delivery worker running" if background else "")
        + (f"; {monitors[1]} uptime monitors running" if monitors else "")
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if background:
            background.stop()
        if monitors:
            monitors[0].set()


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
    ) -> None:
        """Serve the REST API, the public status page and the dashboard."""
        ctx = Context()
        if monitors is not None:
            ctx.settings.monitors_file = monitors
        serve_forever(ctx, host, port, worker=worker)
