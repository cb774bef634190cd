"""Time and randomness shared by the generators.

Times are int64 microseconds since the Unix epoch (UTC) inside the simulator, converted to timezone-aware
Polars datetimes only when frames are built. Every generator draws from its own stream, named, so adding a
generator never changes what another one draws.

>>> from forewarn.sim.config import SimConfig
>>> cfg = SimConfig(customers=10, days=30)
>>> int(region_offsets(cfg)[0, 0]), int(region_offsets(cfg)[3, 0])  # London, New York in January (seconds)
(0, -18000)
>>> to_datetime(np.array([day_us(cfg, 1)])).to_list()[0].isoformat()
'2026-01-02T00:00:00+00:00'
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from forewarn.sim.config import SimConfig

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
MINUTE = 60 * US


def rng(cfg: SimConfig, name: str) -> np.random.Generator:
    """The random stream of generator ``name`` for this seed (stable across versions of other generators)."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, zlib.crc32(name.encode())]))


def epoch_us(when: datetime) -> int:
    return int((when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def day_us(cfg: SimConfig, day: int | np.ndarray) -> np.ndarray:
    """Start (00:00 UTC) of simulated day ``day`` (0-based)."""
    return epoch_us(cfg.start_dt) + np.asarray(day, dtype=np.int64) * DAY


def region_offsets(cfg: SimConfig) -> np.ndarray:
    """UTC offset in seconds of each region's time zone at noon UTC of each day, shape (regions, days + 1)."""
    out = np.zeros((len(cfg.regions), cfg.days + 1), dtype=np.int64)
    for r, region in enumerate(cfg.regions):
        tz = ZoneInfo(region.timezone)
        for d in range(cfg.days + 1):
            noon = cfg.start_dt + timedelta(days=d, hours=12)
            offset = noon.astimezone(tz).utcoffset()
            out[r, d] = int(offset.total_seconds()) if offset is not None else 0
    return out


def local_to_utc_us(
    cfg: SimConfig, offsets: np.ndarray, region: np.ndarray, day: np.ndarray, local_hour: np.ndarray
) -> np.ndarray:
    """UTC time of ``local_hour`` (float hours) on simulated ``day`` in each region's local time."""
    day = np.clip(np.asarray(day, dtype=np.int64), 0, cfg.days)
    seconds = (np.asarray(local_hour) * 3600).astype(np.int64)  # whole seconds: JSON times carry no fraction
    return day_us(cfg, day) + seconds * US - offsets[region, day] * US


def to_datetime(us: np.ndarray | pl.Series, name: str = "ts") -> pl.Series:
    """Microseconds since the epoch -> Polars ``Datetime("us", "UTC")``."""
    s = pl.Series(name, np.asarray(us, dtype=np.int64))
    return s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def iso(us: int | None) -> str | None:
    """One time as ISO-8601 UTC with a ``Z`` (for JSON)."""
    if us is None:
        return None
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).strftime("%Y-%m-%dT%H:%M:%SZ")


def date_strings(cfg: SimConfig) -> np.ndarray:
    """``YYYY-MM-DD`` of every simulated day (and the day after the end)."""
    return np.array([(cfg.start + timedelta(days=d)).isoformat() for d in range(cfg.days + 1)])


def take(values: np.ndarray | list[str], idx: np.ndarray, name: str = "") -> pl.Series:
    """``values[idx]`` as a Polars series; fast for strings (gathers inside Polars instead of via numpy)."""
    return pl.Series(name, list(values) if isinstance(values, np.ndarray) else values).gather(
        np.asarray(idx, dtype=np.int64)
    )
