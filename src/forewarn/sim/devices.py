"""Customer devices (TV recorders with a disk) reporting SMART-like counters every night.

Most counters stay 0. Failing devices degrade first: for 7-35 days before they fail, some of their counters
rise and accelerate (``A * x**p`` with p 1.5-3, never decreasing); the device stops reporting once it failed.
Some healthy devices carry benign noise: a small reallocated-sector count that appears once and stays flat, or
rare single command timeouts. ``device_failure`` is ``detectable_from`` the first reading where a degrading
counter is non-zero.

>>> from forewarn.sim.config import SimConfig
>>> from forewarn.sim import customers
>>> cfg = SimConfig(customers=200, days=60, seed=2)
>>> res = generate(cfg, customers.generate(cfg))
>>> sorted(res.frame["attribute"].unique())[:2]
['smart_187_raw', 'smart_188_raw']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim import reactions
from forewarn.sim.clock import HOUR, MINUTE, US, day_us, rng, take, to_datetime
from forewarn.sim.config import SimConfig
from forewarn.sim.customers import Population
from forewarn.sim.truth import record

ATTRS = ("smart_5_raw", "smart_187_raw", "smart_188_raw", "smart_197_raw", "smart_198_raw")
P_ATTR = np.array([0.8, 0.5, 0.3, 0.7, 0.5])  # which counters move on a failing disk
MODELS = ("DVR-500", "DVR-1T", "HUB-4K")


@dataclass
class DeviceResult:
    frame: pl.DataFrame
    truth: list[dict[str, Any]]
    causes: pl.DataFrame
    by_customer: dict[str, list[str]]
    failures: pl.DataFrame  # customer_id, device_id, model, failed_at (us)


def generate(cfg: SimConfig, pop: Population) -> DeviceResult:
    g = rng(cfg, "devices")
    days = cfg.days
    owners = np.nonzero(pop.has("tv"))[0]
    n = len(owners)
    dev_ids = np.array([f"DVR-{pop.ids[c]}" for c in owners])
    model = np.array(MODELS)[g.integers(0, len(MODELS), size=n)]
    minute = g.integers(0, 120, size=n)
    values = np.zeros((n, days, len(ATTRS)))
    alive_days = np.full(n, days)

    h = cfg.history_days
    failing = np.nonzero(g.random(n) < cfg.p_device_failure)[0]
    fail_day = g.integers(max(h, 8), days, size=len(failing))
    length = g.integers(cfg.degrade_days[0], cfg.degrade_days[1] + 1, size=len(failing))
    deg_start = np.maximum(1, fail_day - length)
    t = np.arange(days)[None, :]
    moving = g.random((len(failing), len(ATTRS))) < P_ATTR
    moving[:, 0] |= ~moving.any(axis=1)  # at least one counter moves on every failing disk
    for a in range(len(ATTRS)):
        moves = moving[:, a]
        amp = 60.0 * np.exp(0.8 * g.standard_normal(len(failing)))
        power = g.uniform(1.5, 3.0, size=len(failing))
        x = np.clip((t - deg_start[:, None] + 1) / (fail_day - deg_start)[:, None], 0, None)
        curve = amp[:, None] * x ** power[:, None] + g.poisson(0.3, size=(len(failing), days)) * (x > 0)
        curve = np.maximum.accumulate(np.floor(curve), axis=1) * moves[:, None]
        values[failing, :, a] = curve
    alive_days[failing] = fail_day

    healthy = np.setdiff1d(np.arange(n), failing)
    noisy = healthy[g.random(len(healthy)) < cfg.p_benign_noise]
    half = g.random(len(noisy)) < 0.5
    step_day = g.integers(0, days, size=len(noisy))
    step = g.integers(1, 9, size=len(noisy))
    values[noisy[half], :, 0] = np.where(t >= step_day[half, None], step[half, None], 0)
    timeouts = g.random((len(noisy), days)) < 0.02
    values[noisy[~half], :, 2] = np.cumsum(timeouts[~half], axis=1)

    read_ts = day_us(cfg, np.arange(days))[None, :] + 3 * HOUR + minute[:, None] * MINUTE  # (n, days)
    fail_ts = day_us(cfg, fail_day - 1) + 3 * HOUR + minute[failing] * MINUTE
    fail_ts += (g.uniform(2.0, 22.0, size=len(failing)) * 3600).astype(np.int64) * US

    truth = []
    for j, dv in enumerate(failing):
        nz = np.nonzero(values[dv, : fail_day[j]].max(axis=1) > 0)[0]
        first = int(read_ts[dv, nz[0]]) if len(nz) else None
        c = owners[dv]
        truth.append(
            record(
                f"device_failure-{dev_ids[dv]}",
                "device_failure",
                customer_id=str(pop.ids[c]),
                service_id="tv",
                start=int(fail_ts[j]),
                detectable_from=first,
                details={
                    "device_id": str(dev_ids[dv]),
                    "model": str(model[dv]),
                    "degrade_days": int(fail_day[j] - deg_start[j]),
                    "last_reading": {
                        ATTRS[a]: float(values[dv, fail_day[j] - 1, a])
                        for a in range(len(ATTRS))
                        if values[dv, fail_day[j] - 1, a] > 0
                    },
                },
            )
        )
    causes = reactions.causes(
        [f"device_failure-{d}" for d in dev_ids[failing]],
        "device_failure",
        pop.ids[owners[failing]],
        fail_ts,
        cfg.reactions["device_failure"].p_contact,
        "tv",
        list(model[failing]),
    )

    present = np.arange(days)[None, :] < alive_days[:, None]
    dv, dd = np.nonzero(present)
    k = len(ATTRS)
    rows_dev = np.repeat(dv, k)
    rows_day = np.repeat(dd, k)
    rows_attr = np.tile(np.arange(k), len(dv))
    dates = np.array(
        [(cfg.start.fromordinal(cfg.start.toordinal() + d)).strftime("%Y%m%d") for d in range(days)]
    )
    frame = pl.DataFrame(
        {
            "device_id": take(dev_ids, rows_dev),
            "attribute": take(np.array(ATTRS), rows_attr),
            "day": take(dates, rows_day),
            "customer_id": take(pop.ids[owners], rows_dev),
            "ts": to_datetime(read_ts[rows_dev, rows_day]),
            "value": values[rows_dev, rows_day, rows_attr],
            "model": take(model, rows_dev),
        }
    ).select(
        pl.concat_str([pl.lit("t"), "device_id", "attribute", "day"], separator="-").alias("event_id"),
        "customer_id",
        "ts",
        "device_id",
        "attribute",
        "value",
        "model",
    )
    failures = pl.DataFrame(
        {
            "customer_id": pop.ids[owners[failing]],
            "device_id": dev_ids[failing],
            "model": model[failing],
            "failed_at": fail_ts.astype(np.int64),
        },
        schema={"customer_id": pl.String, "device_id": pl.String, "model": pl.String, "failed_at": pl.Int64},
    )
    by_customer = {str(pop.ids[c]): [str(d)] for c, d in zip(owners, dev_ids, strict=True)}
    return DeviceResult(frame=frame, truth=truth, causes=causes, by_customer=by_customer, failures=failures)
