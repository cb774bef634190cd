"""`forewarn demo`: every stage on a simulated company, then the API and dashboard."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from forewarn.context import Context


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        customers: int = typer.Option(10_000, help="simulated customers"),
        days: int = typer.Option(180, help="days of simulated history"),
        seed: int = typer.Option(7, help="simulation seed (same seed, same world)"),
        home: Path = typer.Option(Path(".forewarn/demo"), help="folder for the demo's stores and outputs"),
        backtest_days: int = typer.Option(60, help="days of history to backtest the playbooks over"),
        serve: bool = typer.Option(
            True, help="serve the API and dashboard afterwards (--no-serve only prints)"
        ),
        port: int = typer.Option(8000, help="port for the API and dashboard"),
    ) -> None:
        """Simulate a company, run every stage on it, print a summary, then serve the API and dashboard."""
        from forewarn.cli.serve import serve_forever
        from forewarn.demo import DemoOptions, demo_admin, file_channels, run_demo

        options = DemoOptions(
            customers=customers, days=days, seed=seed, home=home, backtest_days=backtest_days
        )

        def serve_dashboard(ctx: Context) -> None:
            from forewarn.cli.tokens import create_token

            token = create_token(ctx, "demo", ["admin"], expires_in=timedelta(days=1))
            typer.echo(
                "API token for this demo (admin, valid for a day; `forewarn tokens revoke` ends it sooner):\n"
                f"  curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/v1/incidents"
            )
            password = demo_admin(ctx)
            typer.echo(
                f"Dashboard: http://127.0.0.1:{port}/  sign in as admin with password {password}\n"
                "  (generated for this run; `forewarn users` manages dashboard users)"
            )
            channels = file_channels(options.home)
            serve_forever(ctx, "127.0.0.1", port, worker_options={"channels": channels})

        run_demo(options, serve=serve_dashboard if serve else None)
