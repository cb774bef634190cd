"""The ``forewarn`` command line. Each module in this package adds its commands through ``register(app)``."""

from __future__ import annotations

import typer

from forewarn.cli import (
    backtest,
    db,
    demo,
    detect,
    incidents,
    ingest,
    metrics,
    playbooks,
    run,
    serve,
    simulate,
    tokens,
    worker,
)

app = typer.Typer(
    name="forewarn",
    help="Proactive customer service: tell customers about a problem before they have to call.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for module in (
    db,
    ingest,
    simulate,
    detect,
    incidents,
    worker,
    playbooks,
    run,
    backtest,
    metrics,
    serve,
    demo,
    tokens,
):
    module.register(app)


def main() -> None:
    app()
