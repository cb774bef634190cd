"""A small stale-while-revalidate cache for expensive aggregates (the overview's outcome metrics).

A value younger than ``fresh_s`` is served as is. An older one is still served at once while one background
thread recomputes it, so however many people watch the dashboard the database computes each view at most
once per ``fresh_s``. A key never seen is computed in the caller's thread; concurrent callers of the same
key wait for that one computation instead of starting their own.

>>> calls = []
>>> cache = StaleWhileRevalidate(fresh_s=60)
>>> cache.get("k", lambda: calls.append(1) or len(calls)).value
1
>>> cache.get("k", lambda: calls.append(1) or len(calls)).value  # fresh: not recomputed
1
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cached:
    value: Any
    computed_at: datetime  # wall clock, for "as of" on the page
    seconds: float  # how long the computation took
    at: float  # monotonic time it finished


class StaleWhileRevalidate:
    """Thread-safe; at most ``max_entries`` keys (least recently used are dropped)."""

    def __init__(self, fresh_s: float = 30.0, max_entries: int = 64) -> None:
        self.fresh_s = fresh_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Cached] = OrderedDict()
        self._running: dict[Hashable, threading.Event] = {}

    def _compute(
        self, key: Hashable, fn: Callable[[], Any], done: threading.Event, *, background: bool = True
    ) -> Cached | None:
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception:
            if not background:
                raise
            log.exception("refreshing %r failed; serving the previous value", key)
            return None
        finally:
            with self._lock:
                self._running.pop(key, None)
            done.set()
        entry = Cached(value, datetime.now(UTC), time.perf_counter() - t0, time.monotonic())
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def get(self, key: Hashable, fn: Callable[[], Any]) -> Cached:
        """The value for ``key``, computing it with ``fn`` when missing or refreshing it when stale."""
        with self._lock:
            entry = self._entries.get(key)
            running = self._running.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                if time.monotonic() - entry.at < self.fresh_s or running is not None:
                    return entry
            if running is None:
                done = self._running[key] = threading.Event()
        if running is not None:  # someone is computing this missing key: wait for theirs
            running.wait()
            with self._lock:
                got = self._entries.get(key)
            return got if got is not None else self.get(key, fn)
        if entry is not None:  # stale: serve it, refresh behind
            threading.Thread(target=self._compute, args=(key, fn, done), daemon=True).start()
            return entry
        fresh = self._compute(key, fn, done, background=False)
        assert fresh is not None
        return fresh

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
