"""Outages and planned maintenance on services in regions, and the service health metrics that show them.

An outage hits one service in one region; about a third widen to a second region 10-90 minutes later. The
affected customers are exactly those who depend on the service in the region (from ``dependencies.csv``),
each from the time their region was added. Planned maintenance runs 01:00-04:00 local time, is scheduled 5-14
days ahead (a ``maintenance`` subscription event for every dependent customer) and affects them the same way.

``service_metric`` rows: per service and region, every 5 minutes, ``error_rate`` (share of failed requests)
and ``requests``, stamped at the end of the 5 minutes; outages show as error rate up and traffic down. An
outage is ``detectable_from`` the end of the first 5-minute bucket it touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim import reactions
from forewarn.sim.clock import HOUR, MINUTE, US, day_us, epoch_us, iso, region_offsets, rng, take, to_datetime
from forewarn.sim.config import SimConfig
from forewarn.sim.customers import Population
from forewarn.sim.truth import record

BUCKET = 5 * MINUTE


@dataclass
class Disruption:
    id: str
    type: str  # outage | maintenance
    service: int
    regions: list[tuple[int, int]]  # (region index, added_at us)
    start: int
    end: int
    error_rate: float
    traffic_drop: float
    scheduled_at: int | None = None


@dataclass
class OutageResult:
    frame: pl.DataFrame  # service_metric signals
    maintenance_events: pl.DataFrame  # subscription rows
    truth: list[dict[str, Any]]
    causes: pl.DataFrame
    disruptions: list[Disruption]


def _bucket_end(us: int) -> int:
    return (us // BUCKET + 1) * BUCKET


def _dependents(pop: Population, service: int, region: int) -> np.ndarray:
    return np.nonzero(pop.services[:, service] & (pop.region == region))[0]


def _plan(cfg: SimConfig, pop: Population, g: np.random.Generator) -> list[Disruption]:
    days = cfg.days
    t0 = epoch_us(cfg.start_dt)
    sw = np.array([s.outage_weight for s in cfg.services])
    rw = np.array([r.weight for r in cfg.regions])
    first_day = max(2, min(7, days // 4))
    out: list[Disruption] = []
    n_out = max(1, int(round(cfg.outages_per_30_days * days / 30)))
    for k in range(n_out):
        s = int(g.choice(len(sw), p=sw / sw.sum()))
        r = int(g.choice(len(rw), p=rw / rw.sum()))
        start = t0 + int(g.uniform(first_day, days - 0.6) * 86400) * US
        start -= start % MINUTE
        dur_h = float(
            np.clip(cfg.outage_median_h * np.exp(cfg.outage_sigma * g.standard_normal()), 0.25, 12.0)
        )
        end = start + int(dur_h * 60) * MINUTE
        regions = [(r, start)]
        widen, delay = g.random(), g.uniform(10, 90)
        if widen < cfg.p_outage_widens and start + delay * MINUTE < end:
            others = [i for i in range(len(rw)) if i != r]
            r2 = others[int(g.integers(0, len(others)))]
            regions.append((r2, start + int(delay) * MINUTE))
        out.append(
            Disruption(
                f"outage-{k + 1:02d}",
                "outage",
                s,
                regions,
                start,
                end,
                float(g.uniform(0.15, 0.8)),
                float(g.uniform(0.3, 0.8)),
            )
        )
    offsets = region_offsets(cfg)
    n_m = int(round(cfg.maintenance_per_30_days * days / 30))
    for k in range(n_m):
        s = int(g.choice(len(sw), p=sw / sw.sum()))
        r = int(g.choice(len(rw), p=rw / rw.sum()))
        day = int(g.integers(max(1, cfg.history_days // 2), days - 1))
        hours = int(g.integers(1, 4))
        start = day_us(cfg, day) + HOUR - int(offsets[r, day]) * US  # 01:00 local
        scheduled = start - int(g.uniform(5, 14) * 24) * HOUR
        scheduled = max(scheduled, t0 + 9 * HOUR)
        out.append(
            Disruption(
                f"maintenance-{k + 1:02d}",
                "maintenance",
                s,
                [(r, start)],
                start,
                start + hours * HOUR,
                float(g.uniform(0.05, 0.2)),
                float(g.uniform(0.5, 0.9)),
                scheduled_at=int(scheduled),
            )
        )
    return out


def generate(cfg: SimConfig, pop: Population) -> OutageResult:
    g = rng(cfg, "outages")
    plan = _plan(cfg, pop, g)
    region_names = [r.name for r in cfg.regions]
    svc_ids = [s.id for s in cfg.services]
    truth, cause_frames, maint_rows = [], [], []
    offsets = region_offsets(cfg)
    for d in plan:
        affected = []
        for r, added in d.regions:
            who = _dependents(pop, d.service, r)
            affected.append(
                {"region": region_names[r], "added_at": added, "customers": [str(x) for x in pop.ids[who]]}
            )
            if len(who) == 0:
                continue
            react = cfg.reactions[d.type]
            dur_h = (d.end - added) / HOUR
            p = react.p_contact * min(1.0, 0.3 + dur_h / 2.5) if d.type == "outage" else react.p_contact
            cause_frames.append(
                reactions.causes(
                    [d.id] * len(who),
                    d.type,
                    pop.ids[who],
                    np.full(len(who), added),
                    p,
                    svc_ids[d.service],
                    region_names[r],
                )
            )
            if d.type == "maintenance":
                local = d.start + int(offsets[r, (d.start - epoch_us(cfg.start_dt)) // (24 * HOUR)]) * US
                local_date = (
                    cfg.start_dt + timedelta(microseconds=int(local - epoch_us(cfg.start_dt)))
                ).date()
                hours = (d.end - d.start) // HOUR
                maint_rows.append(
                    pl.DataFrame(
                        {
                            "event_id": [f"sub-{d.id}-{pop.ids[c]}" for c in who],
                            "customer_id": pop.ids[who],
                        }
                    ).with_columns(
                        pl.lit(d.scheduled_at).alias("ts"),
                        pl.lit("maintenance").alias("event_type"),
                        pl.lit(local_date).alias("due_date"),
                        pl.lit(None, pl.String).alias("plan_from"),
                        pl.lit(None, pl.String).alias("plan_to"),
                        pl.lit(svc_ids[d.service]).alias("service_id"),
                        pl.lit(f"planned maintenance 01:00-{1 + hours:02d}:00 local time").alias("details"),
                    )
                )
        detectable = d.scheduled_at if d.type == "maintenance" else _bucket_end(d.start)
        truth.append(
            record(
                d.id,
                d.type,
                service_id=svc_ids[d.service],
                regions=[region_names[r] for r, _ in d.regions],
                start=d.start,
                end=d.end,
                detectable_from=detectable,
                details={
                    "error_rate": round(d.error_rate, 3),
                    "traffic_drop": round(d.traffic_drop, 3),
                    "regions": [
                        {
                            "region": region_names[r],
                            "detectable_from": _bucket_end(a) if d.type == "outage" else detectable,
                        }
                        for r, a in d.regions
                    ],
                    "customers": sum(len(a["customers"]) for a in affected),
                },
                affected=affected,
            )
        )
    for rec in truth:  # JSON-friendly times inside details
        for reg in rec["details"]["regions"]:
            reg["detectable_from"] = iso(reg["detectable_from"])

    frame = _metrics(cfg, pop, g, plan, offsets)
    maint = (
        pl.concat(maint_rows).with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        if maint_rows
        else None
    )
    causes = (
        pl.concat(cause_frames) if cause_frames else reactions.causes([], "outage", [], np.array([]), 0.0)
    )
    return OutageResult(frame=frame, maintenance_events=maint, truth=truth, causes=causes, disruptions=plan)


def _metrics(
    cfg: SimConfig, pop: Population, g: np.random.Generator, plan: list[Disruption], offsets: np.ndarray
) -> pl.DataFrame:
    n_s, n_r = len(cfg.services), len(cfg.regions)
    per_day = 288
    t_count = cfg.days * per_day
    bucket_start = epoch_us(cfg.start_dt) + np.arange(t_count, dtype=np.int64) * BUCKET
    day = np.arange(t_count) // per_day
    utc_hour = (np.arange(t_count) % per_day) / 12.0
    dependents = np.array([[len(_dependents(pop, s, r)) for r in range(n_r)] for s in range(n_s)])
    rpc = np.array([s.requests_per_customer for s in cfg.services])
    local_hour = (utc_hour[None, :] + offsets[:, day] / 3600.0) % 24  # (regions, T)
    diurnal = 0.3 + 0.7 * (0.5 - 0.5 * np.cos((local_hour - 8.0) / 24 * 2 * np.pi)) ** 1.5
    lam = np.maximum(dependents, 1)[:, :, None] * rpc[:, None, None] * diurnal[None, :, :]  # (S, R, T)
    requests = np.maximum(lam + np.sqrt(lam) * g.standard_normal(lam.shape), 0.0)
    base_rate = g.uniform(0.002, 0.01, size=(n_s, n_r, 1))
    rate = base_rate * np.exp(0.35 * g.standard_normal(lam.shape))
    for d in plan:
        for r, added in d.regions:
            # share of each bucket inside the disruption
            overlap = np.clip(
                np.minimum(bucket_start + BUCKET, d.end) - np.maximum(bucket_start, added), 0, BUCKET
            )
            frac = overlap / BUCKET
            hit = frac > 0
            peak = d.error_rate * (0.85 + 0.3 * g.random(hit.sum()))
            rate[d.service, r, hit] = (1 - frac[hit]) * rate[d.service, r, hit] + frac[hit] * peak
            requests[d.service, r, hit] *= 1 - d.traffic_drop * frac[hit]
    rate = np.round(np.clip(rate, 0, 1), 5)
    requests = np.round(requests)
    ts_keys = pl.Series(
        [(cfg.start_dt + timedelta(minutes=5 * (i + 1))).strftime("%Y%m%d%H%M") for i in range(t_count)]
    )
    # rows in time order, then service, region, metric: built by gathering, no sort needed
    labels = [
        (cfg.services[s].id, cfg.regions[r].name, metric)
        for s in range(n_s)
        for r in range(n_r)
        for metric in ("error_rate", "requests")
    ]
    values = np.stack([rate, requests], axis=2).reshape(n_s * n_r * 2, t_count)  # same order as labels
    k = len(labels)
    it = np.repeat(np.arange(t_count), k)
    ik = np.tile(np.arange(k), t_count)
    prefix = [f"m-{s}-{r}-{m}-" for s, r, m in labels]
    return pl.DataFrame(
        {
            "event_id": take(prefix, ik) + ts_keys.gather(it),
            "ts": to_datetime(bucket_start + BUCKET).gather(it),
            "service_id": take([s for s, _, _ in labels], ik),
            "region": take([r for _, r, _ in labels], ik),
            "metric": take([m for _, _, m in labels], ik),
            "value": values.T.ravel(),
        }
    )
