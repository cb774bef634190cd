"""Per-channel rate limits: a thread-safe token bucket per channel.

A bucket of ``rate`` tokens per second holds at most ``burst`` tokens (default: one second's worth). The
worker takes a token before each send; a message that finds the bucket empty is not sent but put back to wait
until ``wait_time`` says a token will be there, so one slow channel never stalls the others.

The buckets live in the worker process: N workers sharing one outbox together send up to N times the
configured rate (give each ``rate / N``).

>>> b = TokenBucket(rate=10, burst=2, now=0.0)
>>> [b.try_acquire(now=0.0) for _ in range(3)]
[True, True, False]
>>> round(b.wait_time(now=0.0), 3)
0.1
>>> b.try_acquire(now=0.1)
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored."""

    def __init__(self, rate: float, burst: float | None = None, now: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 messages per second, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._last = time.monotonic() if now is None else now
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def try_acquire(self, n: float = 1.0, now: float | None = None) -> bool:
        """Take ``n`` tokens if they are there."""
        with self._lock:
            self._refill(time.monotonic() if now is None else now)
            if self._tokens >= n:
                self._tokens -= n
                return True
            return False

    def wait_time(self, n: float = 1.0, now: float | None = None) -> float:
        """Seconds until ``n`` tokens will be there (0 when they are now)."""
        with self._lock:
            self._refill(time.monotonic() if now is None else now)
            return max(0.0, (n - self._tokens) / self.rate)


class RateLimiter:
    """One bucket per channel with a limit; channels without one (or with 0) are unlimited.

    >>> rl = RateLimiter({"sms": 1, "email": 0})
    >>> rl.try_acquire("email"), rl.try_acquire("sms"), rl.try_acquire("sms")
    (True, True, False)
    """

    def __init__(self, limits: Mapping[str, float] | None = None) -> None:
        self.buckets = {name: TokenBucket(rate) for name, rate in (limits or {}).items() if rate and rate > 0}

    def try_acquire(self, channel: str, now: float | None = None) -> bool:
        bucket = self.buckets.get(channel)
        return True if bucket is None else bucket.try_acquire(now=now)

    def wait_time(self, channel: str, queued: int = 1, now: float | None = None) -> float:
        """Seconds until ``queued`` more messages could go on ``channel``."""
        bucket = self.buckets.get(channel)
        return 0.0 if bucket is None else bucket.wait_time(n=queued, now=now)
