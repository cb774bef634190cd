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
    """Run the CLI; a problem with the setup or the input is one line on stderr and exit 1, never a traceback."""
    import sys

    from sqlalchemy.exc import OperationalError

    from forewarn.cli.options import UserError
    from forewarn.incidents.monitors import MonitorConfigError
    from forewarn.state.db import SchemaOutOfDate

    try:
        app()
    except SchemaOutOfDate as e:
        _fail(f"state store: {e}")
    except OperationalError as e:
        first = str(e.orig or e).strip().splitlines()[0]
        _fail(f"state store: cannot use it ({first}); check FOREWARN_DATABASE_URL")
    except MonitorConfigError as e:
        _fail(
            f"{e}; check the monitors file (FOREWARN_MONITORS_FILE or --monitors; format in docs/incidents.md)"
        )
    except (UserError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        sys.exit(130)


def _fail(message: str) -> None:
    import sys

    print(f"forewarn: {message}", file=sys.stderr)
    sys.exit(1)
