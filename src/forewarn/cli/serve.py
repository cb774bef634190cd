"""`forewarn serve`: the REST API, status page and dashboard, with a delivery worker in the same process."""

from __future__ import annotations

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
    console.print(
        f"[bold]forewarn[/] serving on http://{host}:{port}  "
        f"(dashboard /, API docs /docs, status page /status, metrics /metrics)"
        + ("; delivery worker running" if background else "")
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if background:
            background.stop()


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="address to bind"),
        port: int = typer.Option(8000, help="port to bind"),
        worker: bool = typer.Option(True, help="also run the delivery worker in this process"),
    ) -> None:
        """Serve the REST API, the public status page and the dashboard."""
        serve_forever(Context(), host, port, worker=worker)
