"""`forewarn users`: the people who sign in to the dashboard (roles viewer, agent, admin)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from forewarn.context import Context
from forewarn.state import users

console = Console()
users_app = typer.Typer(
    help="Dashboard users: create, list, disable, change role or password.", no_args_is_help=True
)

ROLE_HELP = (
    "viewer (reads), agent (also acts on tickets, incidents, dead letters), admin (also manages users)"
)


def _password(value: str | None, generate: bool) -> tuple[str | None, bool]:
    if generate:
        return users.generate_password(), True
    if value is None:
        value = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return value, False


@users_app.command("create")
def create_cmd(
    username: str = typer.Argument(..., help="the user name to sign in with"),
    role: str = typer.Option("viewer", help=ROLE_HELP),
    generate: bool = typer.Option(False, "--generate", help="generate a password and print it once"),
    proxy_only: bool = typer.Option(
        False, "--proxy-only", help="no password: the user signs in only through the trusted proxy header"
    ),
    password: str | None = typer.Option(
        None,
        envvar="FOREWARN_NEW_PASSWORD",
        help="the password (asked for when not given)",
        show_default=False,
    ),
) -> None:
    """Add a dashboard user."""
    ctx = Context()
    secret, generated = (None, False) if proxy_only else _password(password, generate)
    try:
        user = users.create_user(ctx.engine, username, role, password=secret)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    console.print(f"user [bold]{user.username}[/] created with role {user.role}")
    if generated:
        console.print(f"password (shown once): [bold]{secret}[/]")


@users_app.command("list")
def list_cmd() -> None:
    """List the dashboard users."""
    table = Table("user", "role", "signs in with", "state", "created", "last sign-in")
    for u in users.list_users(Context().engine):
        table.add_row(
            u.username,
            u.role,
            "password" if u.has_password else "proxy header",
            "disabled" if u.disabled else "active",
            f"{u.created_at:%Y-%m-%d %H:%M}",
            f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never",
        )
    console.print(table)


def _change(fn: object, *args: object) -> users.UserInfo:
    try:
        return fn(Context().engine, *args)  # type: ignore[operator]
    except (LookupError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None


@users_app.command("disable")
def disable_cmd(username: str) -> None:
    """Disable a user: they cannot sign in, and their open sessions end now."""
    _change(users.set_disabled, username, True)
    console.print(f"user [bold]{username}[/] disabled; their sessions are ended")


@users_app.command("enable")
def enable_cmd(username: str) -> None:
    """Enable a disabled user again."""
    _change(users.set_disabled, username, False)
    console.print(f"user [bold]{username}[/] enabled")


@users_app.command("role")
def role_cmd(username: str, role: str = typer.Argument(..., help=ROLE_HELP)) -> None:
    """Change a user's role (their open sessions end)."""
    _change(users.set_role, username, role)
    console.print(f"user [bold]{username}[/] is now {role}")


@users_app.command("password")
def password_cmd(
    username: str,
    generate: bool = typer.Option(False, "--generate", help="generate a password and print it once"),
    password: str | None = typer.Option(None, envvar="FOREWARN_NEW_PASSWORD", show_default=False),
) -> None:
    """Set a user's password (their open sessions end)."""
    secret, generated = _password(password, generate)
    _change(users.set_password, username, secret)
    console.print(f"password of [bold]{username}[/] changed")
    if generated:
        console.print(f"password (shown once): [bold]{secret}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
