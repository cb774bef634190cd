"""Benchmark: one detection pass (``run_detection``, all trip wires) reading only the declared windows against
reading each kind's whole history, on a long simulated history in a real signal store.

A live loop (``forewarn run --every 15m``) runs a pass again and again; with whole-history reads each pass
costs O(all history) and grows forever, with windowed reads it costs what the trip wires can depend on (see
``forewarn.detect.base.TripWire.history``). Both reads find the same (tests/test_detect_window.py proves it on
smaller worlds; here the findings written by both are compared too).

Run: ``.venv/bin/python bench/detect_window.py`` (default 2,000 customers x 365 days, as_of at the end;
``--customers 300 --days 120`` for a quick run). Simulating and ingesting are not timed. Passes alternate
(windowed, full, ...) so machine noise hits both alike; medians are printed, with rows read per kind and the
ratio. The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from forewarn.config import Settings  # noqa: E402
from forewarn.context import Context  # noqa: E402
from forewarn.detect.registry import TRIP_WIRES  # noqa: E402
from forewarn.detect.runner import load_wire, read_signals, run_detection, store_reader  # noqa: E402
from forewarn.measure.backtest import data_from_ctx  # noqa: E402
from forewarn.signals.ingest import ingest_paths  # noqa: E402
from forewarn.sim.config import SimConfig  # noqa: E402
from forewarn.sim.world import simulate  # noqa: E402
from forewarn.state.db import upgrade  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="passes of each kind (medians are reported)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        world = simulate(SimConfig(customers=args.customers, days=args.days, seed=args.seed), home / "world")
        url = f"sqlite:///{home / 'state.db'}"
        upgrade(url)
        ctx = Context(Settings(home=home, database_url=url))
        assert ingest_paths(ctx, [home / "world"]).ok
        setup = time.perf_counter() - t0
        as_of = world.config.end - timedelta(hours=1)
        counts = {k: n for k, n in ctx.signals.counts().items() if n}
        print(
            f"world: {args.customers} customers x {args.days} days, {counts} (setup {setup:.1f} s, untimed)"
        )

        # rows each way reads, and the reads alone (the part that grew with history)
        wires = [load_wire(n) for n in TRIP_WIRES]
        context = {"customers": data_from_ctx(ctx, kinds=[]).customers}
        rows: dict[str, dict[str, int]] = {}
        for mode in ("windowed", "full"):
            data, since = read_signals(
                store_reader(ctx), wires, as_of, full_history=mode == "full", **context
            )
            rows[mode] = {k: f.height for k, f in data.items()}
        print(f"rows read: windowed {rows['windowed']}")
        print(f"           full     {rows['full']}")

        times: dict[str, list[float]] = {"windowed": [], "full": []}
        reads: dict[str, list[float]] = {"windowed": [], "full": []}
        found: dict[str, Any] = {}
        wire_s: dict[str, dict[str, list[float]]] = {"windowed": {}, "full": {}}
        for _ in range(args.repeat):
            for mode in ("windowed", "full"):
                full = mode == "full"
                t = time.perf_counter()
                read_signals(store_reader(ctx), wires, as_of, full_history=full, **context)
                reads[mode].append(time.perf_counter() - t)
                t = time.perf_counter()
                report = run_detection(ctx, as_of, full_history=full)
                times[mode].append(time.perf_counter() - t)
                assert all(w.status == "ok" for w in report.wires), report.to_dict()
                found[mode] = {w.name: w.firing for w in report.wires}
                for w in report.wires:
                    wire_s[mode].setdefault(w.name, []).append(w.seconds)
        ctx.close()

    assert found["windowed"] == found["full"], found
    med = {m: statistics.median(v) for m, v in times.items()}
    med_read = {m: statistics.median(v) for m, v in reads.items()}
    ratio = med["full"] / med["windowed"]
    ratio_read = med_read["full"] / med_read["windowed"]
    per_wire = {m: {n: round(statistics.median(v), 3) for n, v in ws.items()} for m, ws in wire_s.items()}
    print(f"firing per wire (both): {found['full']}")
    print(f"detect + write per wire, median s: windowed {per_wire['windowed']}")
    print(f"                                   full     {per_wire['full']}")
    print(
        f"read only : windowed {med_read['windowed']:.3f} s, full {med_read['full']:.3f} s, x{ratio_read:.2f}"
    )
    print(f"whole pass: windowed {med['windowed']:.3f} s, full {med['full']:.3f} s, x{ratio:.2f}")
    print(
        json.dumps(
            {
                "customers": args.customers,
                "days": args.days,
                "seed": args.seed,
                "signals": counts,
                "rows_read": rows,
                "pass_seconds": times,
                "read_seconds": reads,
                "pass_median": med,
                "read_median": med_read,
                "pass_ratio_full_over_windowed": round(ratio, 2),
                "read_ratio_full_over_windowed": round(ratio_read, 2),
                "firing": found["full"],
                "wire_median_seconds": per_wire,
                "polars_threads": pl.thread_pool_size(),
            }
        )
    )


if __name__ == "__main__":
    main()
