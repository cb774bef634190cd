"""Retry timing: exponential backoff with jitter, and when to give up.

The n-th failed attempt waits ``min(backoff_max_s, backoff_base_s * 2 ** (n - 1))`` scaled by a random factor
in ``[0.5, 1.0]`` ("equal jitter"): retries of a fan-out that failed together spread out instead of hitting a
recovering receiver at the same instant, yet never retry sooner than half the nominal delay.

>>> import random
>>> from forewarn.config import DeliverySettings
>>> d = DeliverySettings(backoff_base_s=2, backoff_max_s=600)
>>> [nominal_delay(n, d) for n in (1, 2, 3, 10, 20)]
[2.0, 4.0, 8.0, 600.0, 600.0]
>>> 1.0 <= backoff_delay(1, d, random.Random(7)) <= 2.0
True
>>> should_dead_letter(6, d), should_dead_letter(5, d)
(True, False)
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

_RNG = random.Random()


def _delivery(settings: Any) -> Any:
    return getattr(settings, "delivery", settings)


def nominal_delay(attempt: int, settings: Any) -> float:
    """The un-jittered delay in seconds after failed attempt number ``attempt`` (1-based)."""
    d = _delivery(settings)
    exponent = min(max(attempt - 1, 0), 62)
    return float(min(d.backoff_max_s, d.backoff_base_s * (2.0**exponent)))


def backoff_delay(attempt: int, settings: Any, rng: random.Random | None = None) -> float:
    """The jittered delay in seconds after failed attempt ``attempt``: uniform in ``[nominal/2, nominal]``."""
    nominal = nominal_delay(attempt, settings)
    return nominal * (0.5 + 0.5 * (rng or _RNG).random())


def next_attempt_at(now: datetime, attempt: int, settings: Any, rng: random.Random | None = None) -> datetime:
    """When to try again after failed attempt ``attempt`` at ``now``."""
    return now + timedelta(seconds=backoff_delay(attempt, settings, rng))


def should_dead_letter(attempts: int, settings: Any) -> bool:
    """Whether a message that has now failed ``attempts`` times goes to the dead letters."""
    return attempts >= _delivery(settings).max_attempts
