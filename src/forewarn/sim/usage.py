"""Daily data usage per customer: a personal level, weekly seasonality and noise, with injected anomalies.

With ``season_amplitude`` > 0 a slower cycle (``season_period_days``, a random phase per customer) multiplies
the weekly one: the ``noisy`` world (see ``forewarn.sim.config.CONFIGS``) has one.

Injected (each on its own customers, never before ``cfg.history_days`` so a per-customer baseline exists):
``usage_spike`` (1-3 days at 2.8-5x), ``usage_drop`` (3-10 days at 8-30%), ``level_shift`` (a lasting move to
1.8-2.6x or 0.3-0.5x) and ``went_silent`` (no usage rows at all from a day on). ``near_limit`` events are not
injected but found: the first day a customer's use in a billing cycle passes 80% of the plan's allowance.

Usage rows are stamped at the end of the day they cover (``ts`` = next midnight UTC, ``period`` = day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim import reactions
from forewarn.sim.clock import HOUR, day_us, rng, take, to_datetime
from forewarn.sim.config import SimConfig
from forewarn.sim.customers import Population
from forewarn.sim.truth import record


@dataclass
class Cycles:
    """Billing cycles: every customer's cycle starts on their ``bill_day`` of each month."""

    start_mask: np.ndarray  # bool (customers, days): day d is the first day of a cycle
    cycle_used: np.ndarray  # float (customers, days): use so far in the cycle, including day d


@dataclass
class UsageResult:
    frame: pl.DataFrame
    daily: np.ndarray  # (customers, days) GB, 0 where silent
    cycles: Cycles
    truth: list[dict[str, Any]]
    causes: pl.DataFrame


def _calendar(cfg: SimConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dates = [cfg.start + timedelta(days=d) for d in range(cfg.days)]
    dom = np.array([d.day for d in dates])
    dow = np.array([d.weekday() for d in dates])
    return dom, dow, np.array([d.isoformat() for d in dates])


def cycles(cfg: SimConfig, pop: Population, daily: np.ndarray) -> Cycles:
    dom, _, _ = _calendar(cfg)
    start_mask = dom[None, :] == pop.bill_day[:, None]
    start_mask[:, 0] = True  # the window opens mid-cycle: count from day 0
    idx = np.where(start_mask, np.arange(cfg.days)[None, :], 0)
    last_start = np.maximum.accumulate(idx, axis=1)
    cs = np.cumsum(daily, axis=1)
    prior = np.where(last_start > 0, np.take_along_axis(cs, np.maximum(last_start - 1, 0), axis=1), 0.0)
    start_mask[:, 0] = dom[0] == pop.bill_day
    return Cycles(start_mask=start_mask, cycle_used=cs - prior)


def _choose(g: np.random.Generator, pool: np.ndarray, p: float) -> np.ndarray:
    k = int(round(p * len(pool)))
    return np.sort(pool[:k]) if k else np.array([], dtype=int)


def generate(cfg: SimConfig, pop: Population) -> UsageResult:
    g = rng(cfg, "usage")
    n, days = pop.n, cfg.days
    dom, dow, date_str = _calendar(cfg)
    daily_gb = np.array([p.daily_gb for p in cfg.plans])[pop.plan]
    level = daily_gb * np.exp(cfg.level_sigma * g.standard_normal(n))
    weekend = g.uniform(*cfg.weekend_boost, size=n)
    season = np.where(dow[None, :] >= 5, weekend[:, None], 1.0)
    if cfg.season_amplitude > 0:  # a slower cycle on top (its own stream: the default world draws nothing)
        gs = rng(cfg, "usage-season")
        phase = gs.uniform(0.0, 2 * np.pi, size=n)
        wave = np.sin(2 * np.pi * np.arange(days)[None, :] / cfg.season_period_days + phase[:, None])
        season = season * (1.0 + cfg.season_amplitude * wave)
    s = cfg.usage_noise_sigma
    values = level[:, None] * season * np.exp(s * g.standard_normal((n, days)) - s * s / 2)
    present = np.ones((n, days), dtype=bool)

    h = cfg.history_days
    ids = pop.ids
    main_service = np.where(pop.has("broadband"), "broadband", "mobile")
    truth: list[dict[str, Any]] = []
    cause_frames: list[pl.DataFrame] = []
    day_idx = np.arange(days)[None, :]

    pool = g.permutation(n)
    counts = [int(round(p * n)) for p in (cfg.p_usage_spike, cfg.p_usage_drop, cfg.p_level_shift)]
    spikes = np.sort(pool[: counts[0]])
    drops = np.sort(pool[counts[0] : counts[0] + counts[1]])
    shifts = np.sort(pool[sum(counts[:2]) : sum(counts)])
    silent = np.sort(pool[sum(counts) : sum(counts) + int(round(cfg.p_went_silent * n))])

    def window(rows: np.ndarray, lengths: tuple[int, int] | None, tail: int) -> tuple[np.ndarray, np.ndarray]:
        start = g.integers(h, max(h + 1, days - tail), size=len(rows))
        if lengths is None:
            return start, np.full(len(rows), days) - start
        length = g.integers(lengths[0], lengths[1] + 1, size=len(rows))
        return start, np.minimum(length, days - start)

    def typical(c: int, d0: int) -> float:
        return float(np.median(values[c, max(0, d0 - 28) : d0])) if d0 > 0 else float(level[c])

    for kind, rows, lengths, factors, tail, delay_days in (
        ("usage_spike", spikes, cfg.spike_days, cfg.spike_factor, 1, None),
        ("usage_drop", drops, cfg.drop_days, cfg.drop_factor, 3, None),
        ("level_shift", shifts, None, None, 10, 7),
    ):
        if len(rows) == 0:
            continue
        start, length = window(rows, lengths, tail)
        if factors is None:  # level shifts: half up, half down
            up = g.random(len(rows)) < 0.5
            factor = np.where(up, g.uniform(*cfg.shift_up, len(rows)), g.uniform(*cfg.shift_down, len(rows)))
        else:
            factor = g.uniform(*factors, size=len(rows))
        base = [typical(c, d) for c, d in zip(rows, start, strict=True)]
        mask = (day_idx >= start[:, None]) & (day_idx < (start + length)[:, None])
        values[rows] = np.where(mask, values[rows] * factor[:, None], values[rows])
        t_start = day_us(cfg, start)
        for j, c in enumerate(rows):
            end = None if kind == "level_shift" else int(day_us(cfg, start[j] + length[j]))
            truth.append(
                record(
                    f"{kind}-{ids[c]}-{date_str[start[j]]}",
                    kind,
                    customer_id=str(ids[c]),
                    service_id=str(main_service[c]),
                    start=int(t_start[j]),
                    end=end,
                    detectable_from=int(day_us(cfg, start[j] + 1)),
                    details={
                        "metric": "data_gb",
                        "factor": round(float(factor[j]), 3),
                        "days": int(length[j]),
                        "typical_gb": round(base[j], 3),
                    },
                )
            )
        # when the customer notices: drops the same evening, spikes once over, shifts after a while
        if kind == "usage_drop":
            t0 = t_start + 18 * HOUR
        elif kind == "usage_spike":
            t0 = day_us(cfg, start + length)
        else:
            t0 = t_start + int(delay_days or 0) * 24 * HOUR
        cause_frames.append(
            reactions.causes(
                [f"{kind}-{ids[c]}-{date_str[d]}" for c, d in zip(rows, start, strict=True)],
                kind,
                ids[rows],
                t0,
                cfg.reactions[kind].p_contact,
                main_service[rows],
                [f"{f:.1f}x" for f in factor],
            )
        )

    if len(silent):
        start, _ = window(silent, None, 10)
        present[silent] = day_idx < start[:, None]
        for j, c in enumerate(silent):
            truth.append(
                record(
                    f"went_silent-{ids[c]}-{date_str[start[j]]}",
                    "went_silent",
                    customer_id=str(ids[c]),
                    service_id=str(main_service[c]),
                    start=int(day_us(cfg, start[j])),
                    # the first day without a row is over at the next midnight
                    detectable_from=int(day_us(cfg, start[j] + 1)),
                    details={
                        "metric": "data_gb",
                        "last_row": str(date_str[start[j] - 1]) if start[j] else None,
                    },
                )
            )

    values = np.round(values, 3)
    daily = np.where(present, values, 0.0)
    cyc = cycles(cfg, pop, daily)
    nl_truth, nl_causes = _near_limit(cfg, pop, cyc, date_str, main_service)
    truth.extend(nl_truth)
    cause_frames.append(nl_causes)

    rows_c, rows_d = np.nonzero(present)
    frame = pl.DataFrame(
        {
            "cid": take(ids, rows_c),
            "day": take(date_str, rows_d),
            "ts": to_datetime(day_us(cfg, rows_d + 1)),
            "value": values[rows_c, rows_d],
            "service_id": take(main_service, rows_c),
        }
    ).select(
        pl.concat_str([pl.lit("u-"), pl.col("cid"), pl.lit("-"), pl.col("day")]).alias("event_id"),
        pl.col("cid").alias("customer_id"),
        "ts",
        pl.lit("data_gb").alias("metric"),
        "value",
        pl.lit("GB").alias("unit"),
        pl.lit("day").alias("period"),
        "service_id",
    )
    return UsageResult(
        frame=frame,
        daily=daily,
        cycles=cyc,
        truth=truth,
        causes=pl.concat(cause_frames) if cause_frames else reactions.causes([], "usage_spike", [], [], 0.0),
    )


def _near_limit(
    cfg: SimConfig, pop: Population, cyc: Cycles, date_str: np.ndarray, main_service: np.ndarray
) -> tuple[list[dict[str, Any]], pl.DataFrame]:
    """First day in each (complete) cycle that use passes ``near_limit_share`` of the allowance."""
    limit = pop.limit_gb
    has_limit = ~np.isnan(limit)
    used = cyc.cycle_used
    # cycles that began before the window are partial: their earlier use is unknown, skip them
    seen_start = np.maximum.accumulate(cyc.start_mask, axis=1)
    lim = np.where(has_limit, limit, np.inf)[:, None]
    over80 = (used >= cfg.near_limit_share * lim) & seen_start
    over100 = (used >= lim) & seen_start
    prev80 = np.zeros_like(over80)
    prev80[:, 1:] = over80[:, :-1]
    prev80 &= ~cyc.start_mask
    first80 = over80 & ~prev80
    prev100 = np.zeros_like(over100)
    prev100[:, 1:] = over100[:, :-1]
    prev100 &= ~cyc.start_mask
    first100 = over100 & ~prev100
    cs, ds = np.nonzero(first80)
    # cycle end = the next cycle start after ds
    start_idx = np.where(cyc.start_mask, np.arange(cfg.days)[None, :], cfg.days)
    next_start = np.minimum.accumulate(start_idx[:, ::-1], axis=1)[:, ::-1]
    truth, cause_ids, cause_c, cause_t0 = [], [], [], []
    for c, d in zip(cs, ds, strict=True):
        nxt = next_start[c, d + 1] if d + 1 < cfg.days else cfg.days
        hit = np.nonzero(first100[c, d:nxt])[0]
        rid = f"near_limit-{pop.ids[c]}-{date_str[d]}"
        details = {
            "limit_gb": float(limit[c]),
            "used_gb": round(float(used[c, d]), 3),
            "cycle_ends": (cfg.start + timedelta(days=int(nxt))).isoformat(),
            "exceeded_on": str(date_str[d + hit[0]]) if len(hit) else None,
        }
        truth.append(
            record(
                rid,
                "near_limit",
                customer_id=str(pop.ids[c]),
                service_id=str(main_service[c]),
                start=int(day_us(cfg, d)),
                end=int(day_us(cfg, nxt)),
                detectable_from=int(day_us(cfg, d + 1)),
                details=details,
            )
        )
        if len(hit):  # throttled or charged for overage: that is when they call
            cause_ids.append(rid)
            cause_c.append(c)
            cause_t0.append(int(day_us(cfg, d + hit[0] + 1)))
    cc = np.asarray(cause_c, dtype=int)
    return truth, reactions.causes(
        cause_ids,
        "near_limit",
        pop.ids[cc],
        np.asarray(cause_t0, dtype=np.int64),
        cfg.reactions["near_limit"].p_contact,
        main_service[cc],
        [f"{limit[c]:.0f} GB" for c in cc],
    )
