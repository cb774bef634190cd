"""Precision, recall and lead time of every trip wire against the simulator's ground truth, over seeds and worlds.

Usage::

    python bench/detect_quality.py --seeds 5                  # headline: held-out seeds 101-105, both worlds
    python bench/detect_quality.py --seeds 3 --on tuning      # the seeds parameters are chosen on (1-3)
    python bench/detect_quality.py --seed 90210 --config noisy --wire cadence

Seeds are split: parameters (e.g. the cadence trip wire's) are chosen on the *tuning* seeds 1, 2, 3 only;
the headline figures are the *held-out* seeds 101, 102, ... that no parameter was chosen on. Both simulator
worlds (``forewarn.sim.config.CONFIGS``: ``default`` and ``noisy``, which differs in noise, seasonality and
event rates) are run; per world and trip wire the mean and the min-max over seeds are printed.

For each world: simulate a company (``forewarn.sim.world.simulate``), then replay detection day by day: every
trip wire's ``detect`` at each midnight ``as_of``, seeing only signals with ``ts <= as_of`` (as the live runner
would). A (customer, condition) that starts firing is one detection (an *episode*: it lasts while it keeps
firing).

- recall: share of ground-truth events of the trip wire's types that some detection for the same customer
  matched, i.e. started within [detectable_from - 1 day, max(start, end, detectable_from) + ``--grace`` days];
  a state without an end (``ONGOING``: a lapse, a silence, a level shift) lasts to the end of the simulated
  window, so a late detection of it is late (see delay), not false, and a detection once the state has
  begun (``start``) is true even before the signals make it ``detectable_from``. Events that become
  detectable less than ``--grace`` days before the window closes are left out of recall (the window ends
  before the time a detector is allowed; counted as ``not_detectable_yet``);
- precision: share of detections that matched a ground-truth event of the trip wire's types;
- lead time: event ``start`` minus the first matching detection (positive: the customer was told before it
  happened, e.g. a disk before it failed, a renewal before it is due), and the delay after ``detectable_from``
  (how long after the signal first showed it the trip wire spoke), median and 90th percentile in days.

Goal (issue "Trust"): every trip wire >= 0.9 precision and >= 0.85 recall on every seed, cadence lapses seen
within 14 days of becoming detectable. The last line is a JSON object.
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
from forewarn.sim.config import CONFIGS, named  # noqa: E402
from forewarn.sim.world import simulate  # noqa: E402

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

TUNING_SEEDS = (1, 2, 3)  # parameters are chosen on these only
HELD_OUT_FIRST = 101  # headline seeds: 101, 102, ... (disjoint from the tuning seeds)
GOAL = {"precision": 0.9, "recall": 0.85, "cadence_delay_days": 14.0}


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
        lo = pl.col("detectable_from").fill_null(pl.col("start")) - timedelta(days=1)
        lo = pl.when(pl.col("type").is_in(list(ONGOING))).then(pl.min_horizontal(lo, "start")).otherwise(lo)
        truth = truth.with_columns(lo=lo, hi=hi)
    pairs = det.join(truth, on="customer_id", how="inner").filter(
        (pl.col("ts") >= pl.col("lo")) & (pl.col("ts") <= pl.col("hi"))
    )
    matched_det = pairs.select("customer_id", "condition", "ts").unique().height
    first = pairs.group_by("event_id", "customer_id").agg(
        first=pl.col("ts").min(), start=pl.col("start").first(), dfrom=pl.col("detectable_from").first()
    )
    # Events that became detectable less than ``grace`` before the window closed are out of recall (the
    # window ends before the time a detector is allowed); a detection matching them is still true.
    later = truth.filter(pl.col("detectable_from") > until - grace) if until is not None else truth.clear()
    pending = first.join(later.select("event_id", "customer_id"), on=["event_id", "customer_id"], how="semi")
    per_type = (
        truth.join(later.select("event_id", "customer_id"), on=["event_id", "customer_id"], how="anti")
        .join(
            first.select("event_id", "customer_id", hit=pl.lit(True)),
            on=["event_id", "customer_id"],
            how="left",
        )
        .group_by("type")
        .agg(events=pl.len(), found=pl.col("hit").fill_null(False).sum())
        .sort("type")
    )
    lead = (first["start"] - first["first"]).dt.total_hours() / 24
    seen = first.join(later.select("event_id", "customer_id"), on=["event_id", "customer_id"], how="anti")
    delay = ((seen["first"] - seen["dfrom"]).dt.total_hours() / 24).drop_nulls()
    found = first.height - pending.height
    events = truth.height - later.height
    return {
        "detections": det.height,
        "events": events,
        "not_detectable_yet": later.height,
        "precision": round(matched_det / det.height, 3) if det.height else None,
        "recall": round(found / events, 3) if events else None,
        "median_lead_days": round(float(lead.median()), 2) if first.height else None,
        "median_delay_days": round(float(delay.median()), 2) if delay.len() else None,
        "p90_delay_days": round(float(delay.quantile(0.9)), 2) if delay.len() else None,
        "by_type": {r["type"]: f"{r['found']}/{r['events']}" for r in per_type.iter_rows(named=True)},
    }


def run_world(config: str, seed: int, args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Every selected trip wire's score on one simulated world."""
    t0 = time.perf_counter()
    world = simulate(named(config, customers=args.customers, days=args.days, seed=seed))
    sim_s = time.perf_counter() - t0
    ctx = context(world)
    truth = truth_events(world)
    start = datetime.combine(world.config.start, datetime.min.time(), tzinfo=UTC)
    days = [start + timedelta(days=d) for d in range(1, args.days + 1)]
    results: dict[str, dict[str, object]] = {}
    for name in args.wire or list(TRIP_WIRES):
        wire = load_wire(name)
        if wire is None:
            print(f"{name}: module not there, skipped")
            continue
        t = time.perf_counter()
        if args.via == "score_history":  # the backtest path: one pass, point-in-time, the same runs
            data = {k: world.frames[k] for k in wire.kinds if k in world.frames}
            found = wire.score_history(data, runs=days, **ctx)
            fired = found.select("customer_id", "condition", pl.col("ts").cast(pl.Datetime("us", "UTC")))
        else:
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
    print(
        f"  {config} seed {seed}: {args.customers} customers x {args.days} days simulated in {sim_s:.1f} s, "
        f"{truth.height} customer-level truth events"
    )
    for name, r in results.items():
        cells = [r["detections"], r["events"], r["precision"], r["recall"]]
        cells += [r["median_lead_days"], r["median_delay_days"], r["p90_delay_days"]]
        text = "".join(
            f"{c:>10.2f}" if isinstance(c, float) else f"{c if c is not None else '-':>10}" for c in cells
        )
        by_type = ", ".join(f"{k} {v}" for k, v in r["by_type"].items())
        print(f"    {name:<12}{text}  {by_type}")
    return results


STATS = ("precision", "recall", "median_delay_days", "p90_delay_days")


def spread(per_seed: list[dict[str, object]]) -> dict[str, object]:
    """Mean, min and max over seeds of each figure in ``STATS`` (seeds where it is undefined left out).

    >>> spread([{"precision": 0.9, "recall": 1.0}, {"precision": 0.7, "recall": None}])["precision"]
    {'mean': 0.8, 'min': 0.7, 'max': 0.9}
    """
    out: dict[str, object] = {}
    for k in STATS:
        vals = [float(r[k]) for r in per_seed if r.get(k) is not None]  # type: ignore[arg-type]
        out[k] = (
            {"mean": round(sum(vals) / len(vals), 3), "min": round(min(vals), 3), "max": round(max(vals), 3)}
            if vals
            else None
        )
    return out


def meets_goal(name: str, per_seed: list[dict[str, object]]) -> bool:
    """The issue's goal on every seed: precision >= 0.9, recall >= 0.85 (cadence: median delay <= 14 days)."""
    for r in per_seed:
        p, rc = r.get("precision"), r.get("recall")
        if p is None or rc is None or p < GOAL["precision"] or rc < GOAL["recall"]:  # type: ignore[operator]
            return False
        d = r.get("median_delay_days")
        if name == "cadence" and (d is None or d > GOAL["cadence_delay_days"]):  # type: ignore[operator]
            return False
    return True


def _cell(s: dict[str, float] | None) -> str:
    return "-" if s is None else f"{s['mean']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seeds", type=int, default=5, help="how many seeds per world")
    ap.add_argument(
        "--on",
        choices=("held-out", "tuning"),
        default="held-out",
        help=f"held-out seeds {HELD_OUT_FIRST}, {HELD_OUT_FIRST + 1}, ... (the headline) or the tuning seeds "
        f"{', '.join(map(str, TUNING_SEEDS))} (where parameters are chosen)",
    )
    ap.add_argument("--seed", type=int, action="append", help="these seeds instead (repeatable; ad hoc)")
    ap.add_argument(
        "--config", action="append", choices=list(CONFIGS), help="simulator world(s); default: all of them"
    )
    ap.add_argument(
        "--grace", type=float, default=14.0, help="days after an event a detection still matches it"
    )
    ap.add_argument("--wire", action="append", help="only these trip wires (repeatable)")
    ap.add_argument(
        "--via",
        choices=("detect", "score_history"),
        default="detect",
        help="detect at every midnight (as live runs do) or the wires' score_history over the same runs "
        "(as backtests do; cadence then refits its population model every refit_days, not every run)",
    )
    args = ap.parse_args()
    if args.seed:
        seeds, role = list(args.seed), "ad hoc"
    elif args.on == "tuning":
        seeds, role = list(TUNING_SEEDS[: args.seeds]), "tuning (parameters are chosen on these)"
    else:
        seeds, role = list(range(HELD_OUT_FIRST, HELD_OUT_FIRST + args.seeds)), "held-out (headline)"
    configs = args.config or list(CONFIGS)
    tuned_on = sorted(set(seeds) & set(TUNING_SEEDS))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"seeds {seeds}: {role}; parameters were chosen on seeds {list(TUNING_SEEDS)} only")
    if tuned_on and role != "tuning (parameters are chosen on these)":
        print(f"WARNING: seeds {tuned_on} are tuning seeds; these figures are not held out")
    print(f"worlds: {', '.join(configs)}; grace {args.grace:g} days; findings via {args.via}")
    head = ("detect", "events", "prec", "recall", "lead d", "delay d", "p90 d")
    print("    " + f"{'trip wire':<12}" + "".join(f"{h:>10}" for h in head) + "  recall by type")
    t0 = time.perf_counter()
    per: dict[str, dict[str, list[dict[str, object]]]] = {}
    for config in configs:
        for seed in seeds:
            for name, res in run_world(config, seed, args).items():
                per.setdefault(config, {}).setdefault(name, []).append({"seed": seed, **res})
    summary: dict[str, dict[str, object]] = {}
    print()
    print(f"mean (min-max) over seeds {seeds} ({role}); goal: precision >= 0.9 and recall >= 0.85 on every")
    print("seed, cadence lapses seen a median <= 14 days after they became detectable")
    print(
        f"{'world':<9}{'trip wire':<13}{'precision':>18}{'recall':>18}{'delay d (median)':>20}"
        f"{'delay d (p90)':>20}  goal"
    )
    for config, wires in per.items():
        for name, rows in wires.items():
            sp = spread(rows)
            ok = meets_goal(name, rows)
            summary.setdefault(config, {})[name] = {**sp, "goal_met_every_seed": ok, "per_seed": rows}
            cells = "".join(f"{_cell(sp[k]):>18}" for k in ("precision", "recall"))  # type: ignore[arg-type]
            cells += "".join(f"{_cell(sp[k]):>20}" for k in ("median_delay_days", "p90_delay_days"))  # type: ignore[arg-type]
            print(f"{config:<9}{name:<13}{cells}  {'met' if ok else 'not met'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    out = {
        "seeds": seeds,
        "seed_role": role,
        "tuning_seeds": list(TUNING_SEEDS),
        "customers": args.customers,
        "days": args.days,
        "via": args.via,
        "worlds": summary,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
