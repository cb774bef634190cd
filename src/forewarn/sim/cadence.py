"""Purchase and visit cadence: prepaid top-ups and store / app visits, with customers who silently stop.

Each customer with a habit has a mean interval (log-uniform in the configured range) and gamma-distributed
gaps (shape ``cadence_shape``: fairly regular). Some stop for good from a day on: ``purchase_lapse`` for
top-ups, ``contact_lapse`` for visits, only injected with at least three events before it.

A lapse is ``detectable_from`` the first time an oracle could call it at the precision the trip wires aim for
(0.9): one that knows the customer's true rhythm (gamma shape and mean gap) and the world's chance that a gap
is a lapse, and judges P(still buying | silent this long) <= ``ORACLE_P_ALIVE`` (0.1). Not before the first
missing event would have happened. Why not simply that first missing event (as before): at that moment the
silence is one ordinary gap, indistinguishable from a customer who is just a bit late, and ordinary gaps of
2-3x the mean are common (shape 4: about 1 in 50 gaps is over 2x); a lapse counted "detectable" there was
undetectable for days to weeks (at 1 lapse per ~100-200 gaps, a detector speaking at 2x the mean gap would be
wrong on most of its messages), so the "days after detectable" figure measured the world, not the detector.

>>> from forewarn.sim.config import SimConfig
>>> from forewarn.sim import customers
>>> cfg = SimConfig(customers=300, days=90, seed=3)
>>> res = generate(cfg, customers.generate(cfg))
>>> set(res.frame["event_type"].unique()) <= {"purchase", "visit"}
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import gamma

from forewarn.sim.clock import US, epoch_us, iso, local_to_utc_us, region_offsets, rng, take, to_datetime
from forewarn.sim.config import SimConfig
from forewarn.sim.customers import Population
from forewarn.sim.truth import record

TOP_UPS = np.array([10.0, 15.0, 20.0, 25.0, 30.0])
ORACLE_P_ALIVE = 0.1  # a lapse is detectable once an oracle's P(still buying) is at most this


def oracle_silence(mean: np.ndarray, shape: float, gap_hazard: np.ndarray) -> np.ndarray:
    """Days of silence after the last event at which the oracle's P(still buying) reaches ``ORACLE_P_ALIVE``.

    With prior chance ``gap_hazard`` that a gap is a lapse and gap survival ``S`` (gamma, ``shape``, ``mean``):
    P(alive | silence s) = (1 - h) S(s) / ((1 - h) S(s) + h) <= q  <=>  S(s) <= h q / ((1 - q)(1 - h)).

    >>> [round(float(x), 1) for x in oracle_silence(np.array([10.0, 10.0]), 4.0, np.array([0.01, 0.001]))]
    [32.3, 39.5]
    """
    q = ORACLE_P_ALIVE
    tail = gap_hazard * q / ((1 - q) * (1 - gap_hazard))
    return gamma.isf(tail, shape, scale=mean / shape)


@dataclass
class CadenceResult:
    frame: pl.DataFrame
    truth: list[dict[str, Any]]


def _stream(
    cfg: SimConfig,
    g: np.random.Generator,
    pop: Population,
    rows: np.ndarray,
    interval: tuple[float, float],
    p_lapse: float,
    event_type: str,
    lapse_type: str,
    offsets: np.ndarray,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    days = cfg.days
    n = len(rows)
    mean = np.exp(g.uniform(np.log(interval[0]), np.log(interval[1]), size=n))
    k = int(np.ceil(days / interval[0] * 2)) + 4
    shape = cfg.cadence_shape
    gaps = g.gamma(shape, mean[:, None] / shape, size=(n, k))
    first = g.uniform(0, mean)
    t = first[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps[:, :-1], axis=1)], axis=1)
    hour = g.uniform(8.0, 21.0, size=(n, k))
    day = np.floor(t).astype(np.int64)
    valid = t < days
    ts = local_to_utc_us(cfg, offsets, pop.region[rows][:, None], day, hour)
    valid &= (ts >= epoch_us(cfg.start_dt)) & (ts < epoch_us(cfg.end))

    # lapses: stop after day L; need room to see the absence and history before it
    h = cfg.history_days
    lapse_day = g.uniform(h, np.maximum(h + 1.0, days - 2.5 * mean))
    candidate = (days - 2.5 * mean > h) & (g.random(n) < p_lapse)
    before = (valid & (t < lapse_day[:, None])).sum(axis=1)
    dropped = valid & (t >= lapse_day[:, None])
    lapsed = candidate & (before >= 3) & dropped.any(axis=1)
    keep = valid & ~(dropped & lapsed[:, None])

    # The oracle's per-gap chance of a lapse: lapses start uniformly over the window they may start in.
    lapse_window = np.maximum(days - 2.5 * mean - h, 1.0)
    gap_hazard = np.clip(p_lapse * mean / lapse_window, 1e-6, 0.5)
    silence_us = (oracle_silence(mean, shape, gap_hazard) * 86400).astype(np.int64) * US  # whole seconds
    truth = []
    region_names = [r.name for r in cfg.regions]
    for j in np.nonzero(lapsed)[0]:
        c = rows[j]
        first_missing = int(ts[j][dropped[j]].min())
        kept = ts[j][keep[j]]
        detectable = max(first_missing, int(kept.max()) + int(silence_us[j]))
        truth.append(
            record(
                f"{lapse_type}-{pop.ids[c]}",
                lapse_type,
                customer_id=str(pop.ids[c]),
                regions=[region_names[pop.region[c]]],
                start=epoch_us(cfg.start_dt) + int(lapse_day[j] * 86400) * US,
                detectable_from=detectable,
                details={
                    "event_type": event_type,
                    "mean_interval_days": round(float(mean[j]), 2),
                    "first_missing": iso(first_missing),
                    "events_before": int(before[j]),
                    "last_event": iso(int(kept.max())),
                },
            )
        )

    jj, kk = np.nonzero(keep)
    cust = rows[jj]
    currency = np.array([r.currency for r in cfg.regions])[pop.region[cust]]
    if event_type == "purchase":
        usual = TOP_UPS[g.integers(0, len(TOP_UPS), size=n)]
        other = TOP_UPS[g.integers(0, len(TOP_UPS), size=(n, k))]
        amount = np.where(g.random((n, k)) < 0.8, usual[:, None], other)[jj, kk]
        chan = np.array(["app", "web", "store"])[g.choice(3, size=n, p=[0.5, 0.3, 0.2])][jj]
    else:
        amount = np.full(len(jj), np.nan)
        chan = np.array(["store", "app"])[g.choice(2, size=n, p=[0.6, 0.4])][jj]
    frame = pl.DataFrame(
        {
            "customer_id": take(pop.ids, cust),
            "k": kk,
            "ts": to_datetime(ts[jj, kk]),
            "event_type": [event_type] * len(jj),
            "amount": amount,
            "currency": take(currency, np.arange(len(jj))) if len(jj) else pl.Series([], dtype=pl.String),
            "channel": take(chan, np.arange(len(jj))) if len(jj) else pl.Series([], dtype=pl.String),
        }
    ).with_columns(pl.col("amount").fill_nan(None))
    prefix = "p" if event_type == "purchase" else "v"
    frame = frame.select(
        pl.concat_str(
            [pl.lit(prefix + "-"), pl.col("customer_id"), pl.lit("-"), pl.col("k").cast(pl.String)]
        ).alias("event_id"),
        "customer_id",
        "ts",
        "event_type",
        "amount",
        "currency",
        "channel",
    )
    return frame, truth


def generate(cfg: SimConfig, pop: Population) -> CadenceResult:
    g = rng(cfg, "cadence")
    offsets = region_offsets(cfg)
    buyers = np.nonzero(pop.prepaid)[0]
    visitors = np.nonzero(~pop.prepaid & (g.random(pop.n) < cfg.p_visitor))[0]
    f1, t1 = _stream(
        cfg,
        g,
        pop,
        buyers,
        cfg.purchase_interval_days,
        cfg.p_purchase_lapse,
        "purchase",
        "purchase_lapse",
        offsets,
    )
    f2, t2 = _stream(
        cfg, g, pop, visitors, cfg.visit_interval_days, cfg.p_visit_lapse, "visit", "contact_lapse", offsets
    )
    frame = pl.concat([f1, f2]).sort(["ts", "event_id"])
    return CadenceResult(frame=frame, truth=t1 + t2)
