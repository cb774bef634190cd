"""Per-channel rate limits, shared by every worker on the same state store: token buckets in a table.

A provider's limit (an SMS gateway's 50 messages a second, say) is per account, not per worker process, so the
bucket lives in the state store (``rate_buckets``: one row per channel) and several workers draining one outbox
together stay under it. A bucket of ``rate`` tokens per second holds at most ``burst`` tokens (default: one
second's worth). A worker takes the tokens a whole batch needs in one short transaction (:meth:`acquire`) and
gives back what it did not use (:meth:`release`); a message that finds no token is not sent but put back to wait
until :meth:`wait_time` says one will be there, so one slow channel never stalls the others.

Time is the wall clock (epoch seconds): limits are about real throughput to a provider, even while a worker
replays simulated time.

>>> refill(tokens=0.0, last=10.0, now=10.5, rate=4.0, burst=10.0)
2.0
>>> refill(tokens=9.0, last=10.0, now=20.0, rate=4.0, burst=10.0)
10.0
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

from sqlalchemy import Engine, text


def refill(tokens: float, last: float, now: float, rate: float, burst: float) -> float:
    """The bucket's tokens at ``now``: ``rate`` per second since ``last``, capped at ``burst``."""
    return min(burst, tokens + max(0.0, now - last) * rate)


class RateLimiter:
    """Token buckets per channel in the state store; channels without a limit (or with 0) are unlimited.

    >>> from forewarn.state.db import make_engine, upgrade
    >>> import tempfile
    >>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"
    >>> upgrade(url)
    >>> rl = RateLimiter(make_engine(url), {"sms": 2, "email": 0})
    >>> rl.acquire("email", 500), rl.acquire("sms", 5), rl.acquire("sms", 5)
    (500, 2, 0)
    >>> 0.4 < rl.wait_time("sms", 1) <= 0.5
    True
    """

    def __init__(self, engine: Engine, limits: Mapping[str, float] | None = None) -> None:
        for name, rate in (limits or {}).items():
            if rate is not None and rate < 0:
                raise ValueError(f"rate limit for {name!r} must be >= 0 messages per second, got {rate!r}")
        self.engine = engine
        self.rates = {name: float(rate) for name, rate in (limits or {}).items() if rate and rate > 0}
        self.bursts = {name: max(1.0, rate) for name, rate in self.rates.items()}
        # what this worker last saw of each bucket (tokens, at): enough for wait_time without a round trip
        self._seen: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def limited(self, channel: str) -> bool:
        return channel in self.rates

    def acquire(self, channel: str, n: int) -> int:
        """Take up to ``n`` tokens from ``channel``'s bucket; returns how many were granted."""
        if n <= 0 or channel not in self.rates:
            return max(n, 0)
        return self._change(channel, -n)

    def release(self, channel: str, n: int) -> None:
        """Give back ``n`` granted tokens a batch did not use (up to the burst)."""
        if n > 0 and channel in self.rates:
            self._change(channel, n)

    def wait_time(self, channel: str, queued: int = 1) -> float:
        """Seconds until ``queued`` more messages could go on ``channel`` (by what this worker last saw)."""
        if channel not in self.rates:
            return 0.0
        tokens, at = self._seen.get(channel, (0.0, time.time()))
        rate = self.rates[channel]
        now_tokens = refill(tokens, at, time.time(), rate, self.bursts[channel])
        return max(0.0, (queued - now_tokens) / rate)

    def _change(self, channel: str, delta: int) -> int:
        """Refill, then take (delta < 0: as many as there are, up to -delta) or give back (delta > 0)."""
        rate, burst = self.rates[channel], self.bursts[channel]
        with self._lock, self.engine.begin() as conn:
            # a channel's first use creates its bucket full; the no-op UPDATE then takes the row's write lock
            # (on both backends) so that two workers never spend the same tokens
            conn.execute(
                text(
                    "INSERT INTO rate_buckets (channel, tokens, updated_at) VALUES (:c, :t, :u) "
                    "ON CONFLICT (channel) DO NOTHING"
                ),
                {"c": channel, "t": burst, "u": time.time()},
            )
            conn.execute(text("UPDATE rate_buckets SET tokens = tokens WHERE channel = :c"), {"c": channel})
            tokens, last = conn.execute(
                text("SELECT tokens, updated_at FROM rate_buckets WHERE channel = :c"), {"c": channel}
            ).one()
            now = time.time()
            tokens = refill(float(tokens), float(last), now, rate, burst)
            granted = 0
            if delta < 0:
                granted = min(-delta, math.floor(tokens + 1e-9))
                tokens -= granted
            else:
                tokens = min(burst, tokens + delta)
            conn.execute(
                text("UPDATE rate_buckets SET tokens = :t, updated_at = :u WHERE channel = :c"),
                {"c": channel, "t": tokens, "u": now},
            )
            self._seen[channel] = (tokens, now)
        return granted


class TokenBucket:
    """One token bucket in this process (the API's per-token limit): the same :func:`refill` rule as the
    shared buckets above, without the round trip, for limits that one process enforces on its own.

    >>> b = TokenBucket(rate=2.0, burst=2.0, now=0.0)
    >>> b.take(now=0.0), b.take(now=0.0), b.take(now=0.0)
    (0.0, 0.0, 0.5)
    >>> b.take(now=0.5)
    0.0
    """

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate, self.burst = rate, max(1.0, burst)
        self.tokens = self.burst
        self.last = time.monotonic() if now is None else now
        self._lock = threading.Lock()

    def take(self, n: int = 1, now: float | None = None) -> float:
        """Take ``n`` tokens: 0.0 when granted, else the seconds until they would be (nothing is taken)."""
        with self._lock:
            now = time.monotonic() if now is None else now
            self.tokens, self.last = refill(self.tokens, self.last, now, self.rate, self.burst), now
            if self.tokens + 1e-9 >= n:
                self.tokens -= n
                return 0.0
            return (n - self.tokens) / self.rate
