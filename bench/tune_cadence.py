"""Choose the cadence trip wire's decision parameters on the tuning seeds only (never the headline seeds).

Usage::

    python bench/tune_cadence.py                       # both worlds, tuning seeds 1-3, the default grid

Simulates each (world, tuning seed) once, scores the cadence trip wire for every parameter set of a small grid
(``score_history`` at every midnight: the same findings as ``detect`` given the BG/NBD models refitted every
``refit_days``), and ranks the sets by: the number of (world, seed) on which the issue's goal holds (precision
>= 0.9, recall >= 0.85, median delay after detectable <= 14 days), then by the worst precision, then by
recall. The chosen set is what ``CadenceParams`` defaults to; ``bench/detect_quality.py`` reports it on the
held-out seeds. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect_quality import GOAL, TRUTH_TYPES, TUNING_SEEDS, episodes, score, truth_events  # noqa: E402
from forewarn.detect.cadence import CadenceParams, CadenceTripWire  # noqa: E402
from forewarn.sim.config import CONFIGS, named  # noqa: E402
from forewarn.sim.world import simulate  # noqa: E402

GRID = {
    "lapse_prior": (0.002, 0.005),
    "lapse_prior_gaps": (100.0, 1000.0),
    "p_alive_threshold": (0.05, 0.1, 0.2, 0.3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=180)
    args = ap.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"tuning seeds {list(TUNING_SEEDS)} x worlds {list(CONFIGS)}; grid {GRID}")
    worlds = []
    for config in CONFIGS:
        for seed in TUNING_SEEDS:
            w = simulate(named(config, customers=args.customers, days=args.days, seed=seed))
            start = datetime.combine(w.config.start, datetime.min.time(), tzinfo=UTC)
            runs = [start + timedelta(days=d) for d in range(1, args.days + 1)]
            truth = truth_events(w).filter(pl.col("type").is_in(list(TRUTH_TYPES["cadence"])))
            worlds.append((config, seed, w.frames, runs, truth))
    keys = list(GRID)
    ranked = []
    t0 = time.perf_counter()
    for values in itertools.product(*GRID.values()):
        params = dict(zip(keys, values, strict=True))
        wire = CadenceTripWire(**params)
        rows = []
        for config, seed, frames, runs, truth in worlds:
            fired = wire.score_history({"purchase": frames["purchase"]}, runs=runs)
            det = episodes(fired.select("customer_id", "condition", "ts"))
            r = score(det, truth, timedelta(days=14), until=runs[-1])
            rows.append({"world": config, "seed": seed, **{k: r[k] for k in ("precision", "recall")}})
            rows[-1]["delay"] = r["median_delay_days"]
        met = sum(
            (r["precision"] or 0) >= GOAL["precision"]
            and (r["recall"] or 0) >= GOAL["recall"]
            and (r["delay"] if r["delay"] is not None else 99) <= GOAL["cadence_delay_days"]
            for r in rows
        )
        worst_p = min(r["precision"] or 0 for r in rows)
        mean_r = sum(r["recall"] or 0 for r in rows) / len(rows)
        ranked.append((met, worst_p, mean_r, params, rows))
        print(
            f"{params}: goal met on {met}/{len(rows)}, worst precision {worst_p:.2f}, mean recall {mean_r:.2f}"
        )
    ranked.sort(key=lambda x: (x[0], x[1], x[2]), reverse=True)
    best = ranked[0]
    defaults = {k: getattr(CadenceParams(), k) for k in keys}
    print(f"scored {len(ranked)} parameter sets in {time.perf_counter() - t0:.0f} s")
    print(f"chosen: {best[3]} (current defaults {defaults})")
    for r in best[4]:
        print(
            f"  {r['world']:<8} seed {r['seed']}: precision {r['precision']}, recall {r['recall']}, "
            f"median delay {r['delay']} d"
        )
    print(
        json.dumps(
            {
                "tuning_seeds": list(TUNING_SEEDS),
                "chosen": best[3],
                "defaults": defaults,
                "per_world_seed": best[4],
            }
        )
    )


if __name__ == "__main__":
    main()
