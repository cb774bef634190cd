"""Benchmark: trip wires' history scoring (``score_history``) against ``detect`` once per day.

A backtest needs every day's findings. Trip wires with ``score_history`` produce them in one pass; otherwise
``detect`` runs once per day (what ``forewarn.measure.backtest`` falls back to). For the cadence, billing,
opportunity and schedule trip wires this times both on a simulated company and checks that the firings are
the same:

- billing, opportunity, schedule: ``score_history`` against ``detect`` at every run, row for row;
- cadence: ``detect`` as the backtest calls it fits the population BG/NBD at every run, ``score_history``
  refits it every ``refit_days`` (point-in-time both ways); so identity is checked against ``detect`` given
  the models ``score_history`` used at each run, and the plain daily-fit ``detect`` is timed as the
  reference (the "before") with its firing count printed alongside.

Run: ``.venv/bin/python bench/detect_history.py`` (default 2,000 customers x 120 days; ``--wires cadence``
for one). The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from forewarn.detect.history import daily_runs
from forewarn.detect.registry import load as load_wire
from forewarn.measure.backtest import data_from_world
from forewarn.sim.world import SimConfig, simulate

KEYS = ["ts", "customer_id", "condition"]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds over ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def every_run(
    wire: Any, frames: dict, runs: list, context: dict, per_run: Callable | None = None
) -> pl.DataFrame:
    parts = [wire.detect(frames, r, **(per_run(r) if per_run else context)) for r in runs]
    parts = [p for p in parts if p.height]
    return pl.concat(parts).sort(KEYS) if parts else pl.DataFrame()


def cadence_models(wire: Any, frames: dict, runs: list) -> Callable:
    """detect's context at a run: the BG/NBD models score_history used there."""
    purchases = frames["purchase"]
    schedule = {
        et: wire.history_models(purchases.filter(pl.col("event_type") == et), runs)
        for et in wire.params.event_types
    }

    def at(run: Any) -> dict:
        return {"bgnbd": {et: [m for t, m in s if t <= run][-1] for et, s in schedule.items()}}

    return at


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--wires", default="cadence,billing,opportunity,schedule", help="comma-separated trip wires"
    )
    ap.add_argument("--repeat", type=int, default=1, help="score_history runs (the median is reported)")
    args = ap.parse_args(argv)

    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"polars {pl.__version__}"
    )
    t0 = time.perf_counter()
    data = data_from_world(simulate(SimConfig(customers=args.customers, days=args.days, seed=args.seed)))
    print(
        f"world: {args.customers} customers x {args.days} days simulated in {time.perf_counter() - t0:.1f} s"
    )
    cust = data.customers
    attrs = cust["attributes"]
    if attrs.dtype != pl.String:
        attrs = pl.Series([json.dumps(a or {}) for a in attrs.to_list()])
    context = {"customers": cust.select("customer_id").with_columns(attributes=attrs)}
    if data.dependencies is not None:
        context["dependencies"] = data.dependencies
    runs = daily_runs(data.frames, ["usage", "purchase", "invoice", "contact"])
    figures: dict[str, Any] = {"customers": args.customers, "days": args.days, "runs": len(runs)}
    ok = True
    for kind in args.wires.split(","):
        wire = load_wire(kind)
        frames = {k: data.frames[k] for k in wire.kinds if k in data.frames}
        hist_s, hist = timed(lambda w=wire, f=frames: w.score_history(f, runs=runs, **context), args.repeat)
        hist = hist.sort(KEYS)
        before_s, before = timed(lambda w=wire, f=frames: every_run(w, f, runs, context), 1)
        line = (
            f"{kind}: detect x {len(runs)} days {before_s:.2f} s, score_history {hist_s:.2f} s "
            f"(ratio {before_s / max(hist_s, 1e-9):.1f}x); firings {hist.height}"
        )
        same_as = before
        if kind == "cadence":
            line += f" (daily-fit detect: {before.height})"
            same_as = every_run(wire, frames, runs, context, cadence_models(wire, frames, runs))
        try:  # every column in the order: a customer may get one condition from two rows (schedule)
            assert_frame_equal(hist.sort(hist.columns), same_as.sort(hist.columns))
            identical = True
        except AssertionError as e:
            identical, ok = False, False
            print(f"  {kind}: firings differ: {str(e).splitlines()[0]}", file=sys.stderr)
        print(line + f"; identical to detect at every run: {identical}")
        figures[kind] = {
            "detect_x_days_s": round(before_s, 3),
            "score_history_s_median": round(hist_s, 3),
            "ratio": round(before_s / max(hist_s, 1e-9), 2),
            "firings": hist.height,
            "detect_firings": before.height,
            "identical": identical,
        }
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
