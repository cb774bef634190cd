"""`forewarn db`: migrate and inspect the state store."""

from __future__ import annotations

import typer
from rich.console import Console

from forewarn.config import get_settings
from forewarn.state.db import make_engine, schema_status, upgrade

console = Console()
db_app = typer.Typer(help="Migrate and inspect the state store.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade_cmd(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Create or migrate the state store's schema to this version of forewarn."""
    url = get_settings().database_url
    upgrade(url, revision)
    engine = make_engine(url)
    console.print(f"[green]state store migrated[/]: {schema_status(engine).describe()} ({_safe(url)})")
    engine.dispose()


@db_app.command("status")
def status_cmd() -> None:
    """Say whether the state store's schema is current; exit 1 when it is not."""
    url = get_settings().database_url
    engine = make_engine(url)
    status = schema_status(engine)
    engine.dispose()
    console.print(f"{_safe(url)}: {status.describe()}")
    raise typer.Exit(0 if status.current else 1)


def _safe(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
