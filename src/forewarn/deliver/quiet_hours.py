"""Quiet hours: the local night-time window in which non-urgent messages wait until morning.

One function, shared by the delivery worker (checked at send time, in the customer's own time zone) and by the
playbooks (to plan sends). The window comes from ``settings.delivery.quiet_hours_start`` /
``quiet_hours_end`` (local hours, 0-23); it may wrap midnight (21 -> 8); equal hours mean no quiet hours.

>>> from datetime import datetime, UTC
>>> from forewarn.config import DeliverySettings
>>> d = DeliverySettings(quiet_hours_start=21, quiet_hours_end=8)
>>> next_allowed(datetime(2026, 1, 15, 23, 30, tzinfo=UTC), "Europe/Berlin", d)   # 00:30 in Berlin
datetime.datetime(2026, 1, 16, 7, 0, tzinfo=datetime.timezone.utc)
>>> next_allowed(datetime(2026, 1, 15, 12, 0, tzinfo=UTC), "Europe/Berlin", d) is None
True
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=1024)
def zone(name: str | None) -> tzinfo:
    """The time zone named ``name``; unknown or empty names mean UTC (a bad profile must not block mail).

    >>> zone("Europe/Paris").key, zone("Not/AZone")
    ('Europe/Paris', datetime.timezone.utc)
    """
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _window(settings: Any) -> tuple[int, int]:
    delivery = getattr(settings, "delivery", settings)
    return int(delivery.quiet_hours_start), int(delivery.quiet_hours_end)


def in_quiet_hours(local_hour: int, start: int, end: int) -> bool:
    """Whether a local hour falls in the window ``[start, end)``, which may wrap midnight.

    >>> [in_quiet_hours(h, 21, 8) for h in (20, 21, 0, 7, 8)]
    [False, True, True, True, False]
    >>> in_quiet_hours(3, 0, 0)
    False
    """
    if start == end:
        return False
    if start < end:
        return start <= local_hour < end
    return local_hour >= start or local_hour < end


def next_allowed(now: datetime | None, customer_tz: str | None, settings: Any) -> datetime | None:
    """``None`` when a message may go now; otherwise the UTC time quiet hours end for this customer.

    ``settings`` is a :class:`forewarn.config.Settings` or its ``delivery`` part. The end is the next local
    ``quiet_hours_end:00``; across a DST change that wall time is resolved the way ``zoneinfo`` does (fold 0).
    """
    start, end = _window(settings)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    tz = zone(customer_tz)
    local = now.astimezone(tz)
    if not in_quiet_hours(local.hour, start, end):
        return None
    day = local.date() if local.hour < end else local.date() + timedelta(days=1)
    resume = datetime.combine(day, time(end), tzinfo=tz).astimezone(UTC)
    return resume if resume > now else None
