"""The ``forewarn`` command line. Each module in this package adds its commands through ``register(app)``."""

from __future__ import annotations

import typer

from forewarn.cli import (
    backtest,
    customers,
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
    users,
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
    customers,
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
    users,
):
    module.register(app)


@app.callback()
def setup() -> None:
    """Before any command: redact logs, and log to stderr at ``FOREWARN_LOG_LEVEL`` (default WARNING)."""
    import logging
    import os

    from forewarn.privacy import logs

    logs.install()  # before anything logs: no email address or phone number reaches a log or traceback
    level = os.environ.get("FOREWARN_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    app()
