"""`forewarn worker`: deliver the outbox (also run inside `forewarn serve` as a background thread)."""

from __future__ import annotations

import signal
import threading
import time

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command("worker")
    def worker(
        once: bool = typer.Option(False, "--once", help="Deliver what is due now, then exit."),
        concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Sending threads per channel."),
        batch_size: int = typer.Option(0, "--batch-size", min=0, help="Messages per claim (0: settings)."),
        lease_s: float = typer.Option(300.0, "--lease-s", min=0.1, help="Claim lease (s) before a retry."),
        poll_s: float = typer.Option(1.0, "--poll-s", min=0.01, help="Idle wait between polls."),
        channel: list[str] = typer.Option(  # noqa: B006 - typer needs a list default
            [], "--channel", help="Only deliver these channels (repeatable); default all."
        ),
        worker_id: str = typer.Option("", "--id", help="Worker id recorded on claims."),
    ) -> None:
        """Deliver outbox messages: claim, check consent / quiet hours / rate limits, render, send, retry."""
        from forewarn.context import Context
        from forewarn.deliver.channels.base import available_channels, channel_spec
        from forewarn.deliver.worker import Worker, build_channel

        ctx = Context()
        channels = None
        if channel:
            channels = {}
            for name in channel:
                spec = channel_spec(name)
                if spec is None:
                    known = ", ".join(available_channels())
                    raise typer.BadParameter(f"--channel: unknown channel {name!r}; expected one of {known}")
                channels[name] = build_channel(ctx, spec, concurrency)
        w = Worker(
            ctx,
            channels=channels,
            worker_id=worker_id or None,
            batch_size=batch_size or None,
            concurrency=concurrency,
            lease_s=lease_s,
        )
        started = time.monotonic()
        if once:
            try:
                w.drain()
            finally:
                w.close()
        else:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            url = ctx.engine.url.render_as_string()
            typer.echo(f"worker {w.worker_id} delivering from {url} (Ctrl-C stops)")
            w.run_forever(stop, poll_s=poll_s)
        elapsed = time.monotonic() - started
        kinds = ("sent", "failed", "dead", "suppressed", "deferred")
        summary = ", ".join(f"{k} {w.stats.get(k, 0)}" for k in kinds)
        typer.echo(f"worker {w.worker_id}: {summary} in {elapsed:.1f}s")
        ctx.close()
