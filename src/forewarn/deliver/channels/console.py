"""Local channels: ``console`` prints each message, ``file`` appends it as one JSON line.

Both are for development, demos and tests: they always succeed and need no server. The file sink defaults to
``<home>/deliveries.jsonl``.

>>> import io
>>> out = io.StringIO()
>>> ConsoleChannel(stream=out).send(Delivery(1, "k1", "console", "ana@x", "Outage", "Hi Ana", "c1")).ok
True
>>> "Outage" in out.getvalue()
True
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from forewarn.deliver.channels.base import Channel, Delivery, SendResult
from forewarn.deliver.channels.webhook import payload_for


class ConsoleChannel(Channel):
    """Print messages to a stream (stdout by default)."""

    name = "console"
    requires_address = False

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any = None, **options: Any) -> ConsoleChannel:
        return cls(**options)

    def send(self, delivery: Delivery) -> SendResult:
        text = (
            f"--- {delivery.channel} to {delivery.address or delivery.customer_id} "
            f"[{delivery.idempotency_key}]\n"
            f"Subject: {delivery.subject}\n\n{delivery.body.rstrip()}\n"
        )
        with self._lock:
            stream = self.stream or sys.stdout
            stream.write(text)
            stream.flush()
        return SendResult(delivery.id, ok=True)


class FileChannel(Channel):
    """Append messages as JSON lines to a file."""

    name = "file"
    requires_address = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any = None, **options: Any) -> FileChannel:
        if "path" not in options:
            home = Path(getattr(settings, "home", ".forewarn"))
            options["path"] = home / "deliveries.jsonl"
        return cls(**options)

    def send(self, delivery: Delivery) -> SendResult:
        return self.send_batch([delivery])[0]

    def send_batch(self, deliveries: Sequence[Delivery]) -> list[SendResult]:
        now = datetime.now(UTC).isoformat()
        lines = [
            json.dumps({**payload_for(d), "delivered_at": now}, ensure_ascii=False) + "\n" for d in deliveries
        ]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.writelines(lines)
        return [SendResult(d.id, ok=True) for d in deliveries]
