"""How fast the simulated company is built: ``forewarn simulate`` at 10k customers x 180 days (target < 30 s).

Measures, per repeat, the in-memory simulation (every generator and the ground truth) and writing the files,
then reports medians, rows per second and the file sizes. The reference, measured in the same process, is the
I/O floor: writing the very same frames to Parquet with Polars (no generation at all); the ratio says how much
the simulator costs on top of just writing its output.

    .venv/bin/python bench/simulate.py --customers 10000 --days 180 --repeat 1

The last line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from forewarn.sim.world import SimConfig, simulate, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    cfg = SimConfig(customers=args.customers, days=args.days, seed=args.seed)
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    )
    print(f"world: {cfg.customers:,} customers x {cfg.days} days, seed {cfg.seed}; {args.repeat} repeat(s)")
    sim_s, write_s, floor_s = [], [], []
    sizes: dict[str, int] = {}
    rows = 0
    for _ in range(args.repeat):
        tmp = Path(tempfile.mkdtemp(prefix="fw-sim-"))
        try:
            t0 = time.perf_counter()
            world = simulate(cfg)
            sim_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            write(world, tmp / "out")
            write_s.append(time.perf_counter() - t0)
            sizes = {p.name: p.stat().st_size for p in sorted((tmp / "out").iterdir())}
            rows = sum(f.height for f in world.frames.values())
            t0 = time.perf_counter()
            for kind, frame in world.frames.items():
                frame.write_parquet(tmp / f"floor-{kind}.parquet")
            floor_s.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    sim, wr, floor = (statistics.median(x) for x in (sim_s, write_s, floor_s))
    total = sim + wr
    for name, size in sizes.items():
        print(f"  {name:24s} {size / 1e6:8.1f} MB")
    print(f"signal rows: {rows:,}; files: {sum(sizes.values()) / 1e6:.1f} MB")
    print(f"simulate (in memory): median {sim:.2f} s; write files: median {wr:.2f} s; total {total:.2f} s")
    print(
        f"reference (write the same frames to Parquet only): median {floor:.2f} s; ratio {total / floor:.1f}x"
    )
    print(f"target < 30 s: {'met' if total < 30 else 'MISSED'}")
    print(
        json.dumps(
            {
                "customers": cfg.customers,
                "days": cfg.days,
                "simulate_s": round(sim, 3),
                "write_s": round(wr, 3),
                "total_s": round(total, 3),
                "reference_parquet_write_s": round(floor, 3),
                "ratio_vs_reference": round(total / floor, 2),
                "signal_rows": rows,
                "rows_per_s": round(rows / total),
                "bytes": sum(sizes.values()),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
