"""Benchmark: a backtest of 5 playbooks over a simulated company (default 10k customers x 365 days).

Measures the whole backtest (trip wires' history scoring, playbooks, guardrails day by day, measurement) and,
as a reference in the same process, the usage trip wire's history scoring alone. Then checks the backtest's
figures against the simulator's ground truth:

- precision: the share of targeted customers with an inbound contact on the playbook's topic within the
  horizon (what the backtest can see in the signals) versus the share with a contact the simulator *caused*
  by a problem of that kind (ground truth) -- within ``--tolerance`` points (percentage points);
- lead time: the median days from targeting to that first contact, observed versus ground truth -- within
  ``--tolerance`` days (the relative difference is printed too).

Only samples large enough to judge count (``--min-targeted`` customers for precision, ``--min-contacted``
contacts for lead time); smaller ones are printed and marked not judged.

Run: ``.venv/bin/python bench/backtest.py`` (or ``--customers 2000 --days 180`` for a quick look). The last
line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import timedelta

from forewarn.config import Settings
from forewarn.decide.playbooks import PlaybookFile, PlaybookSet
from forewarn.detect.registry import load as load_wire
from forewarn.measure.backtest import data_from_world, run_backtest
from forewarn.sim.world import SimConfig, simulate

# Five playbooks on the trip wires with vectorised history scoring (usage, devices) and simulated outages.
PLAYBOOKS = {
    "guardrails": {"budget": {"max_messages": 3, "window": "7d"}, "min_confidence": 0.0},
    "playbooks": [
        {
            "name": "usage-drop",
            "mode": "live",
            "when": {"kind": "usage", "condition": "usage:drop:*"},
            "then": [{"notify": {"channels": ["email", "sms"], "template": "playbook_usage"}}],
            "cooldown": "14d",
            "expiry": "3d",
            "holdout": 0.1,
        },
        {
            "name": "usage-silent",
            "mode": "live",
            "when": {"kind": "usage", "condition": "usage:silent:*"},
            "then": [
                {"notify": {"channels": ["sms", "email"], "template": "playbook_usage", "priority": "high"}}
            ],
            "cooldown": "7d",
            "expiry": "2d",
        },
        {
            "name": "usage-spike",
            "mode": "shadow",
            "when": {"kind": "usage", "condition": "usage:spike:*"},
            "then": [{"notify": {"channels": ["email"], "template": "playbook_usage"}}],
            "cooldown": "7d",
            "expiry": "2d",
            "holdout": 0.1,
        },
        {
            "name": "device-failing",
            "mode": "live",
            "when": {"kind": "devices"},
            "then": [
                {"notify": {"channels": ["email", "sms"], "template": "playbook_device", "priority": "high"}},
                {"webhook": {"url": "http://127.0.0.1:9/replace"}},
            ],
            "cooldown": "30d",
            "expiry": "7d",
            "holdout": 0.1,
        },
        {
            "name": "outage-care",
            "mode": "live",
            "when": {"kind": "outage"},
            "then": [{"task": {"assignee": "team:care", "title": "Call about the outage", "due": "1h"}}],
            "cooldown": "1d",
            "expiry": "1d",
        },
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="backtest runs (the median is reported)")
    ap.add_argument("--limit-s", type=float, default=30.0, help="time limit for one backtest")
    ap.add_argument(
        "--tolerance", type=float, default=2.0, help="points (precision) / days (lead time) allowed"
    )
    ap.add_argument("--min-targeted", type=int, default=100, help="judge precision from this many targeted")
    ap.add_argument("--min-contacted", type=int, default=30, help="judge lead time from this many contacts")
    args = ap.parse_args()

    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    t0 = time.perf_counter()
    world = simulate(SimConfig(customers=args.customers, days=args.days, seed=args.seed))
    sim_s = time.perf_counter() - t0
    data = data_from_world(world)
    ts = world.frames["usage"]["ts"]
    start, end = ts.min().date() + timedelta(days=1), ts.max().date()
    print(
        f"simulated {args.customers} customers x {args.days} days in {sim_s:.1f} s "
        f"({sum(f.height for f in world.frames.values()):,} signal rows); backtest {start} .. {end}"
    )

    f = PlaybookFile.model_validate(PLAYBOOKS)
    pset = PlaybookSet(tuple(f.playbooks), f.guardrails)
    settings = Settings(home="/tmp/fw-bench")

    # reference: the usage trip wire's vectorised history scoring alone
    t0 = time.perf_counter()
    load_wire("usage").score_history({"usage": data.frames["usage"]})
    ref_s = time.perf_counter() - t0

    runs, report = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        report = run_backtest(pset, data, start, end, settings=settings)
        runs.append(time.perf_counter() - t0)
    assert report is not None
    total_s = statistics.median(runs)
    # the same backtest again with the trip wires' firings reused (what trying other playbooks costs)
    t0 = time.perf_counter()
    warm = run_backtest(pset, data, start, end, settings=settings, reuse=report.firings)
    warm_s = time.perf_counter() - t0
    assert warm.to_dict()["playbooks"] == report.to_dict()["playbooks"], "reusing firings changed the result"
    print(report.to_text())

    checks = {}
    ok = total_s < args.limit_s
    tol = args.tolerance
    for p in report.playbooks:
        row: dict[str, object] = {
            "messages": p.messages,
            "targeted": p.customers_targeted,
            "precision": p.precision,
            "precision_truth_contact": p.precision_truth_contact,
            "precision_truth": p.precision_truth,
            "lead_time_days": p.lead_time_days,
            "lead_time_truth_days": p.lead_time_truth_days,
        }
        row["contacted"], row["contacted_truth"] = p.contacted, p.contacted_truth
        # judged only on samples large enough for a 2-point comparison to mean something
        if p.customers_targeted < args.min_targeted:
            row["precision_judged"] = f"no: {p.customers_targeted} targeted < {args.min_targeted}"
        elif p.precision is not None and p.precision_truth_contact is not None:
            d = abs(p.precision - p.precision_truth_contact) * 100
            row["precision_diff_points"] = round(d, 2)
            row["precision_ok"] = d <= tol
            ok &= d <= tol
        if min(p.contacted, p.contacted_truth) < args.min_contacted:
            row["lead_time_judged"] = (
                f"no: {min(p.contacted, p.contacted_truth)} contacts < {args.min_contacted}"
            )
        elif p.lead_time_days is not None and p.lead_time_truth_days:
            d = abs(p.lead_time_days - p.lead_time_truth_days)
            row["lead_time_diff_days"] = round(d, 3)
            row["lead_time_diff_pct"] = round(d / p.lead_time_truth_days * 100, 2)
            row["lead_time_ok"] = d <= tol
            ok &= d <= tol
        checks[p.name] = row
        print(
            f"{p.name:16s} precision observed {_f(p.precision)} vs truth {_f(p.precision_truth_contact)} "
            f"({p.customers_targeted} targeted); lead time observed {_d(p.lead_time_days)} vs truth "
            f"{_d(p.lead_time_truth_days)} ({p.contacted} / {p.contacted_truth} contacts)"
        )
    print(
        f"backtest: median {total_s:.2f} s over {args.repeat} run(s) (limit {args.limit_s:.0f} s); "
        f"reference (usage history scoring alone) {ref_s:.2f} s; ratio {total_s / ref_s:.2f}"
    )
    print(
        f"the same backtest with the trip wires' firings reused (other playbooks, same data): {warm_s:.2f} s"
    )
    print("timings (s): " + ", ".join(f"{k} {v}" for k, v in report.timings.items()))
    print(
        json.dumps(
            {
                "customers": args.customers,
                "days": args.days,
                "playbooks": len(pset.playbooks),
                "simulate_s": round(sim_s, 3),
                "backtest_s_median": round(total_s, 3),
                "backtest_runs_s": [round(x, 3) for x in runs],
                "reference_usage_scoring_s": round(ref_s, 3),
                "backtest_reusing_firings_s": round(warm_s, 3),
                "ratio_to_reference": round(total_s / ref_s, 3),
                "timings": report.timings,
                "truth_checks": checks,
                "cpus": os.cpu_count(),
                "load_average": round(os.getloadavg()[0], 2),
                "ok": bool(ok),
            }
        )
    )
    sys.exit(0 if ok else 1)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _d(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} d"


if __name__ == "__main__":
    main()
