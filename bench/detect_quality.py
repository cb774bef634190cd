"""Precision, recall and lead time of every trip wire against the simulator's ground truth.

Usage::

    python bench/detect_quality.py --customers 2000 --days 180 --seed 7

Simulates a company (``forewarn.sim.world.simulate``), then replays detection day by day: every trip wire's
``detect`` at each midnight ``as_of``, seeing only signals with ``ts <= as_of`` (as the live runner would).
A (customer, condition) that starts firing is one detection (an *episode*: it lasts while it keeps firing).

- recall: share of ground-truth events of the trip wire's types that some detection for the same customer
  matched, i.e. started within [detectable_from - 1 day, max(start, end, detectable_from) + ``--grace`` days];
  a state without an end (``ONGOING``: a lapse, a silence, a level shift) lasts to the end of the simulated
  window, so a late detection of it is late (see lead time), not false;
- precision: share of detections that matched a ground-truth event of the trip wire's types;
- lead time: event ``start`` minus the first matching detection (positive: the customer was told before it
  happened, e.g. a disk before it failed, a renewal before it is due), and the delay after ``detectable_from``
  (how long after the signal first showed it the trip wire spoke), medians in days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from forewarn.detect.registry import TRIP_WIRES  # noqa: E402
from forewarn.detect.runner import load_wire  # noqa: E402
from forewarn.sim.world import SimConfig, simulate  # noqa: E402

TRUTH_TYPES = {
    "usage": ("usage_spike", "usage_drop", "level_shift", "went_silent"),
    "cadence": ("purchase_lapse", "contact_lapse"),
    "billing": ("bill_shock", "billing_error"),
    "devices": ("device_failure",),
    "schedule": ("renewal_due", "card_expiry", "maintenance", "shipment_delay"),
    "opportunity": ("near_limit",),
}


# Truth types that are states, not moments: without an ``end`` they last until the simulated window closes (a
# customer who stopped buying has still stopped a month later). Point events without an end (a bill shock, a
# card expiry) keep the grace period.
ONGOING = ("level_shift", "went_silent", "purchase_lapse", "contact_lapse")


def truth_events(world: Any) -> pl.DataFrame:
    """One row per (event, customer): events for many customers (maintenance) are expanded."""
    rows = []
    for r in world.truth.iter_rows(named=True):
        customers = [r["customer_id"]] if r["customer_id"] else []
        if not customers and r["affected"]:
            for item in json.loads(r["affected"]):
                if isinstance(item, dict):
                    customers += item.get("customers", [])
                elif isinstance(item, str):
                    customers.append(item)
        for c in customers:
            rows.append(
                {
                    "event_id": r["id"],
                    "type": r["type"],
                    "customer_id": c,
                    "start": r["start"],
                    "end": r["end"],
                    "detectable_from": r["detectable_from"],
                }
            )
    schema = {
        "event_id": pl.String,
        "type": pl.String,
        "customer_id": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "detectable_from": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame(rows, schema=schema)


def context(world: Any) -> dict[str, object]:
    customers = world.customers.rename({"id": "customer_id"})
    if isinstance(customers.schema.get("attributes"), pl.Struct):
        customers = customers.with_columns(pl.col("attributes").struct.json_encode())
    return {"customers": customers, "dependencies": world.dependencies, "services": world.services}


def replay(wire: Any, frames: dict[str, pl.DataFrame], days: list[datetime], ctx: dict) -> pl.DataFrame:
    """(customer_id, condition, ts) of every day each condition fired."""
    parts = []
    data = {k: frames[k] for k in wire.kinds if k in frames}
    for as_of in days:
        out = wire.detect({k: f.filter(pl.col("ts") <= as_of) for k, f in data.items()}, as_of, **ctx)
        if out.height:
            parts.append(out.select("customer_id", "condition", pl.lit(as_of).alias("ts")))
    if not parts:
        return pl.DataFrame(
            schema={"customer_id": pl.String, "condition": pl.String, "ts": pl.Datetime("us", "UTC")}
        )
    return pl.concat(parts).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def episodes(fired: pl.DataFrame) -> pl.DataFrame:
    """The first day of each run of consecutive firing days per (customer, condition)."""
    return (
        fired.sort("customer_id", "condition", "ts")
        .with_columns(prev=pl.col("ts").shift(1).over("customer_id", "condition"))
        .filter(pl.col("prev").is_null() | (pl.col("ts") - pl.col("prev") > timedelta(days=1)))
        .select("customer_id", "condition", "ts")
    )


def score(
    det: pl.DataFrame, truth: pl.DataFrame, grace: timedelta, until: datetime | None = None
) -> dict[str, object]:
    """Precision, recall and lead time of detections ``det`` against ``truth``; ``until`` is the end of the
    simulated window (where an ``ONGOING`` state without an end still holds)."""
    if truth.height:
        hi = pl.max_horizontal("start", "end", "detectable_from") + grace
        if until is not None:
            open_state = pl.col("type").is_in(list(ONGOING)) & pl.col("end").is_null()
            hi = pl.when(open_state).then(pl.max_horizontal(hi, pl.lit(until))).otherwise(hi)
        truth = truth.with_columns(
            lo=pl.col("detectable_from").fill_null(pl.col("start")) - timedelta(days=1), hi=hi
        )
    pairs = det.join(truth, on="customer_id", how="inner").filter(
        (pl.col("ts") >= pl.col("lo")) & (pl.col("ts") <= pl.col("hi"))
    )
    matched_det = pairs.select("customer_id", "condition", "ts").unique().height
    first = pairs.group_by("event_id", "customer_id").agg(
        first=pl.col("ts").min(), start=pl.col("start").first(), dfrom=pl.col("detectable_from").first()
    )
    per_type = (
        truth.join(
            first.select("event_id", "customer_id", hit=pl.lit(True)),
            on=["event_id", "customer_id"],
            how="left",
        )
        .group_by("type")
        .agg(events=pl.len(), found=pl.col("hit").fill_null(False).sum())
        .sort("type")
    )
    lead = (first["start"] - first["first"]).dt.total_hours() / 24
    delay = (first["first"] - first["dfrom"]).dt.total_hours() / 24
    return {
        "detections": det.height,
        "events": truth.height,
        "precision": round(matched_det / det.height, 3) if det.height else None,
        "recall": round(first.height / truth.height, 3) if truth.height else None,
        "median_lead_days": round(float(lead.median()), 2) if first.height else None,
        "median_delay_days": round(float(delay.drop_nulls().median()), 2)
        if delay.drop_nulls().len()
        else None,
        "by_type": {r["type"]: f"{r['found']}/{r['events']}" for r in per_type.iter_rows(named=True)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--grace", type=float, default=14.0, help="days after an event a detection still matches it"
    )
    ap.add_argument("--wire", action="append", help="only these trip wires (repeatable)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    world = simulate(SimConfig(customers=args.customers, days=args.days, seed=args.seed))
    sim_s = time.perf_counter() - t0
    ctx = context(world)
    truth = truth_events(world)
    start = datetime.combine(world.config.start, datetime.min.time(), tzinfo=UTC)
    days = [start + timedelta(days=d) for d in range(1, args.days + 1)]
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"simulated {args.customers} customers x {args.days} days (seed {args.seed}) in {sim_s:.1f} s; "
        f"{truth.height} customer-level truth events"
    )
    results: dict[str, dict[str, object]] = {}
    for name in args.wire or list(TRIP_WIRES):
        wire = load_wire(name)
        if wire is None:
            print(f"{name}: module not there, skipped")
            continue
        t = time.perf_counter()
        fired = replay(wire, world.frames, days, ctx)
        det = episodes(fired)
        res = score(
            det,
            truth.filter(pl.col("type").is_in(list(TRUTH_TYPES[name]))),
            timedelta(days=args.grace),
            until=days[-1],
        )
        res["replay_seconds"] = round(time.perf_counter() - t, 2)
        results[name] = res
    print()
    head = ("trip wire", "detections", "events", "precision", "recall", "lead d", "delay d")
    print(f"{head[0]:<13}" + "".join(f"{h:>11}" for h in head[1:]) + "  recall by type")
    for name, r in results.items():
        cells = [r["detections"], r["events"], r["precision"], r["recall"]]
        cells += [r["median_lead_days"], r["median_delay_days"]]
        text = "".join(
            f"{c:>11.2f}" if isinstance(c, float) else f"{c if c is not None else '-':>11}" for c in cells
        )
        print(f"{name:<13}{text}  " + ", ".join(f"{k} {v}" for k, v in r["by_type"].items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
