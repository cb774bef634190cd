"""`forewarn tokens` (API tokens: create, list, revoke) and `forewarn secrets rotate` (signing secrets).

Both are recorded in the audit log as ``cli:<os user>``.
"""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.console import Console
from rich.table import Table

from forewarn.context import Context

console = Console()
tokens_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
secrets_app = typer.Typer(help="The secrets that sign unsubscribe links and webhooks.", no_args_is_help=True)


def _duration(value: str | None, option: str) -> timedelta | None:
    from forewarn.timeutil import parse_duration

    if not value:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise typer.BadParameter(f"{option}: {e}") from None


def create_token(
    ctx: Context,
    name: str,
    scopes: list[str],
    expires_in: timedelta | None = None,
    rate_limit: float | None = None,
) -> str:
    """Create a token as the command line user; returns the token (the only time it is available)."""
    from forewarn.state import audit, tokens
    from forewarn.state.db import transaction

    with transaction(ctx.engine) as s:
        _, token = tokens.create(
            s, name, scopes, actor=audit.cli_actor(), expires_in=expires_in, rate_limit=rate_limit
        )
    return token


@tokens_app.command("create")
def create_cmd(
    name: str = typer.Argument(..., help="what the token is for, e.g. 'billing ingest job'"),
    scope: list[str] = typer.Option(  # noqa: B006 - typer needs a list default
        [], "--scope", "-s", help="a scope (repeatable): signals:write, incidents:read, ..., admin"
    ),
    expires: str = typer.Option(None, "--expires", help="lifetime, e.g. 90d or 12h (default: no expiry)"),
    rate_limit: float = typer.Option(
        None, "--rate-limit", min=0, help="requests per second (default: settings.api.rate_limit; 0: none)"
    ),
) -> None:
    """Create a token and print it once: it is stored hashed and cannot be shown again."""
    from forewarn.state.tokens import SCOPES, TokenError

    ctx = Context()
    try:
        token = create_token(ctx, name, scope, _duration(expires, "--expires"), rate_limit)
    except TokenError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        ctx.close()
    console.print(f"token for [bold]{name}[/] with {', '.join(s for s in scope if s in SCOPES)}:")
    print(token)  # alone on its line, unstyled: easy to copy or capture
    console.print("[yellow]store it now: it is not shown again[/]")


@tokens_app.command("list")
def list_cmd(all_: bool = typer.Option(False, "--all", help="include revoked tokens")) -> None:
    """Tokens with their scopes, expiry and last use (never the token itself)."""
    from forewarn.state import tokens
    from forewarn.state.db import transaction

    ctx = Context()
    with transaction(ctx.engine) as s:
        rows = tokens.all_tokens(s, include_revoked=all_)
    ctx.close()
    table = Table("id", "name", "starts with", "scopes", "created", "expires", "last used", "revoked")

    def t(v: object) -> str:
        return "-" if v is None else f"{v:%Y-%m-%d %H:%M}"

    for r in rows:
        table.add_row(
            str(r.id),
            r.name,
            r.prefix + "...",
            ", ".join(r.scopes),
            t(r.created_at),
            t(r.expires_at),
            t(r.last_used_at),
            t(r.revoked_at),
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke_cmd(
    token_id: int = typer.Argument(..., help="the token's id (see `forewarn tokens list`)"),
) -> None:
    """Revoke a token: the API refuses it within settings.api.token_cache_s (5 s by default)."""
    from forewarn.state import audit, tokens
    from forewarn.state.db import transaction

    ctx = Context()
    try:
        with transaction(ctx.engine) as s:
            row = tokens.revoke(s, token_id, actor=audit.cli_actor())
    except tokens.TokenError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        ctx.close()
    console.print(f"token {row.id} ({row.name}) revoked")


@secrets_app.command("rotate")
def rotate_cmd(
    name: str = typer.Argument(..., help="links (unsubscribe links) or webhooks (outbound signatures)"),
    grace: str = typer.Option("30d", "--grace", help="how long the previous secret stays valid"),
) -> None:
    """Replace a stored secret; what was signed with the previous one stays valid for the grace period."""
    from forewarn.state import audit, secrets
    from forewarn.state.db import transaction

    period = _duration(grace, "--grace")
    ctx = Context()
    try:
        with transaction(ctx.engine) as s:
            ring = secrets.rotate(s, name, period or timedelta(0), actor=audit.cli_actor())
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        ctx.close()
    console.print(
        f"secret {name} rotated; the previous one is accepted until {ring.previous_until:%Y-%m-%d %H:%M} UTC"
    )
    configured = {"links": "FOREWARN_SECRET_KEY", "webhooks": "FOREWARN_WEBHOOK__SECRET"}[name]
    console.print(f"[dim](a secret set in {configured} takes precedence over the stored one)[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(secrets_app, name="secrets")
