"""All trip wires over 10M usage rows (100k customers x 100 days) plus invoices and telemetry for them.

Usage::

    python bench/detect.py                       # the full size
    python bench/detect.py --customers 10000     # a quick run

Generates synthetic signal frames in memory (not timed), then times ``detect`` of every registered trip wire
at the last day, as the runner calls them (one process, ``POLARS_MAX_THREADS`` = 2 unless set). The reference
is a hand-written single Polars query (``over`` windows) computing the same usage baseline (trailing median,
spread, weekly-seasonal model, robust z) measured in the same run; the usage trip wire should be within 1.5x
of it. Targets: all trip wires < 15 s and peak memory < 3 GB on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from forewarn.detect.registry import TRIP_WIRES  # noqa: E402
from forewarn.detect.runner import load_wire  # noqa: E402
from forewarn.signals.schema import LINE_STRUCT  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ATTRS = ["smart_5_raw", "smart_187_raw", "smart_188_raw", "smart_197_raw", "smart_198_raw"]


def ids(n: int) -> pl.Series:
    return pl.select(pl.format("C{}", pl.int_range(n) + 1_000_000).alias("customer_id")).to_series()


def make_usage(n_customers: int, days: int, rng: np.random.Generator) -> pl.DataFrame:
    level = rng.gamma(2.0, 3.0, n_customers)
    weekend = rng.random(n_customers) < 0.3  # a third use more at weekends
    d = np.arange(days)
    dow = (d + T0.weekday()) % 7
    factor = np.where(weekend[:, None] & (dow[None, :] >= 5), 2.5, 1.0)
    values = level[:, None] * factor * rng.gamma(20.0, 1 / 20.0, (n_customers, days))
    spikes = rng.random((n_customers, days)) < 0.001
    values[spikes] *= 6
    silent = rng.random(n_customers) < 0.005
    values[silent, days - 5 :] = 0.0
    cust = ids(n_customers)
    return pl.DataFrame(
        {
            "customer_id": cust.gather(np.repeat(np.arange(n_customers), days)),
            "ts": np.tile(d, n_customers).astype(np.int64) * 86_400_000_000 + int(T0.timestamp() * 1e6),
            "value": values.ravel().round(3),
        }
    ).select(
        event_id=pl.format("u{}", pl.int_range(pl.len())),
        customer_id="customer_id",
        ts=pl.col("ts").cast(pl.Datetime("us", "UTC")),
        metric=pl.lit("data_gb"),
        value="value",
        unit=pl.lit("GB"),
        period=pl.lit("day"),
    )


def make_invoices(n_customers: int, months: int, rng: np.random.Generator) -> pl.DataFrame:
    n = n_customers * months
    cust = ids(n_customers).gather(np.repeat(np.arange(n_customers), months))
    m = np.tile(np.arange(months), n_customers)
    base = np.repeat(rng.choice([20.0, 35.0, 50.0], n_customers), months)
    extra = np.where(rng.random(n) < 0.02, rng.gamma(2.0, 30.0, n), 0.0).round(2)
    lines = pl.DataFrame({"base": base, "extra": extra}).select(
        lines=pl.concat_list(
            pl.struct(code=pl.lit("plan"), description=pl.lit("Plan"), amount="base", quantity=pl.lit(1.0)),
            pl.struct(
                code=pl.lit("roaming"), description=pl.lit("Roaming"), amount="extra", quantity=pl.lit(1.0)
            ),
        ).list.eval(pl.element().filter(pl.element().struct.field("amount") > 0))
    )["lines"]
    start = pl.Series([(T0 + timedelta(days=31 * int(k))).date().replace(day=1) for k in range(months)])
    starts = start.gather(m)
    return pl.DataFrame(
        {
            "event_id": pl.Series([f"i{i}" for i in range(n)]),
            "customer_id": cust,
            "invoice_id": pl.Series([f"INV{i}" for i in range(n)]),
            "status": "issued",
            "period_start": starts,
            "total": (base + extra).round(2),
            "currency": "EUR",
        }
    ).with_columns(
        lines=lines.cast(pl.List(LINE_STRUCT)),
        period_end=pl.col("period_start").dt.month_end(),
        ts=(pl.col("period_start").dt.month_end() + pl.duration(days=1))
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC"),
    )


def make_telemetry(n_customers: int, days: int, every: int, rng: np.random.Generator) -> pl.DataFrame:
    reads = np.arange(days % every, days, every)
    n_r = reads.size
    dev = np.arange(n_customers)
    failing = rng.random(n_customers) < 0.01
    onset = rng.integers(0, days, n_customers)
    rows = []
    cust = ids(n_customers)
    for a_i, attr in enumerate(ATTRS):
        base = np.where(rng.random(n_customers) < 0.05, rng.integers(1, 20, n_customers), 0)
        grow = np.where(
            failing[:, None] & (reads[None, :] > onset[:, None]), (reads[None, :] - onset[:, None]), 0
        )
        vals = (base[:, None] + grow * (a_i + 1)).astype(np.float64)
        rows.append(
            pl.DataFrame(
                {
                    "customer_id": cust.gather(np.repeat(dev, n_r)),
                    "device_id": np.repeat(dev, n_r),
                    "day": np.tile(reads, n_customers),
                    "value": vals.ravel(),
                }
            ).with_columns(attribute=pl.lit(attr))
        )
    tel = pl.concat(rows)
    return tel.select(
        event_id=pl.format("t{}", pl.int_range(pl.len())),
        customer_id="customer_id",
        ts=(pl.col("day").cast(pl.Int64) * 86_400_000_000 + int(T0.timestamp() * 1e6)).cast(
            pl.Datetime("us", "UTC")
        ),
        device_id=pl.format("D{}", "device_id"),
        attribute="attribute",
        value="value",
        model=pl.lit("HDD-4T"),
    )


def make_context(n_customers: int) -> dict[str, pl.DataFrame]:
    cust = ids(n_customers)
    customers = pl.DataFrame(
        {
            "customer_id": cust,
            "plan": "basic",
            "region": "eu",
            "timezone": "UTC",
            "segment": None,
            "attributes": '{"plan_limit_gb": 1000}',
        },
        schema_overrides={"segment": pl.String},
    )
    deps = pl.DataFrame({"customer_id": cust, "service_id": "mobile", "region": "eu"})
    return {"customers": customers, "dependencies": deps}


def reference_usage(
    usage: pl.DataFrame, window: int = 28, scale_window: int = 14, season: int = 7
) -> pl.DataFrame:
    """The same usage baseline as one hand-written query with ``over`` windows; firing rows, last day."""
    keys = ["customer_id", "metric"]
    x = pl.col("value")
    lags = [x.shift(season * k).over(keys) for k in range(1, 5)]
    med4 = (pl.sum_horizontal(lags) - pl.max_horizontal(lags) - pl.min_horizontal(lags)) / 2
    last = usage["ts"].max()
    return (
        usage.lazy()
        .select(*keys, "ts", "value")
        .sort(*keys, "ts")
        .with_columns(med=x.shift(1).rolling_median(window, min_samples=window).over(keys), smed=med4)
        .with_columns(
            scale=1.2533 * (x - pl.col("med")).abs().shift(1).rolling_mean(scale_window).over(keys),
            sscale=1.2533 * (x - pl.col("smed")).abs().shift(1).rolling_mean(scale_window).over(keys),
        )
        .with_columns(seasonal=(pl.col("sscale") < 0.7 * pl.col("scale")).fill_null(False))
        .with_columns(
            expected=pl.when("seasonal").then("smed").otherwise("med"),
            spread=pl.when("seasonal").then("sscale").otherwise("scale"),
        )
        .with_columns(
            z=(x - pl.col("expected")) / pl.max_horizontal("spread", 0.05 * pl.col("expected").abs())
        )
        .filter((pl.col("ts") == last) & (pl.col("z").abs() >= 4))
        .collect()
    )


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3


class _PeakRss(threading.Thread):
    """Samples this process' resident memory every 20 ms: the peak while detection runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_gb()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self.peak = max(self.peak, _rss_gb())

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, _rss_gb())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="timed repetitions (medians are reported)")
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    t = time.perf_counter()
    frames = {
        "usage": make_usage(args.customers, args.days, rng),
        "invoice": make_invoices(args.customers, 3, rng),
        "telemetry": make_telemetry(args.customers, args.days, 7, rng),
    }
    context = make_context(args.customers)
    gen_s = time.perf_counter() - t
    as_of = frames["usage"]["ts"].max()
    sizes = {k: f.height for k, f in frames.items()}
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cpus, "
        f"POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}"
    )
    print(f"data: {sizes} (generated in {gen_s:.1f} s, not timed); as_of {as_of}")

    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    wires = {}
    for name in TRIP_WIRES:
        wire = load_wire(name)
        if wire is None:
            print(f"  {name}: module not there, skipped")
            continue
        wires[name] = wire
    cpu: dict[str, list[float]] = {}
    rss_before = _rss_gb()
    peaks: dict[str, float] = {}
    sampler = _PeakRss()
    sampler.start()
    for _ in range(args.repeat):
        for name, wire in wires.items():
            sampler.peak = _rss_gb()
            t, c = time.perf_counter(), time.process_time()
            out = wire.detect({k: frames[k] for k in wire.kinds if k in frames}, as_of, **context)
            times.setdefault(name, []).append(time.perf_counter() - t)
            peaks[name] = max(peaks.get(name, 0.0), sampler.peak)
            cpu.setdefault(name, []).append(time.process_time() - c)
            counts[name] = out.height
        if "usage" in wires:  # the backtest path: every (customer, day) scored, like the reference query
            sampler.peak = _rss_gb()
            t, c = time.perf_counter(), time.process_time()
            wires["usage"].score_history({"usage": frames["usage"]})
            times.setdefault("usage_score_history", []).append(time.perf_counter() - t)
            cpu.setdefault("usage_score_history", []).append(time.process_time() - c)
            peaks["usage_score_history"] = max(peaks.get("usage_score_history", 0.0), sampler.peak)
        sampler.peak = _rss_gb()
        t, c = time.perf_counter(), time.process_time()
        ref = reference_usage(frames["usage"])
        peaks["reference_usage_query"] = max(peaks.get("reference_usage_query", 0.0), sampler.peak)
        times.setdefault("reference_usage_query", []).append(time.perf_counter() - t)
        cpu.setdefault("reference_usage_query", []).append(time.process_time() - c)
    sampler.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    extra = ("reference_usage_query", "usage_score_history")
    total = sum(v for k, v in med.items() if k not in extra)
    total_cpu = sum(v for k, v in med_cpu.items() if k not in extra)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print()
    load = os.getloadavg()[0]
    print(f"{'trip wire':<24}{'wall s':>10}{'cpu s':>10}{'findings':>10}{'peak GB':>10}")
    for name in wires:
        print(f"{name:<24}{med[name]:>10.2f}{med_cpu[name]:>10.2f}{counts[name]:>10}{peaks[name]:>10.2f}")
    print(f"{'all trip wires':<24}{total:>10.2f}{total_cpu:>10.2f}")
    ref_name = "reference_usage_query"
    print(
        f"{'reference usage query':<24}{med[ref_name]:>10.2f}{med_cpu[ref_name]:>10.2f}{ref.height:>10}"
        f"{peaks[ref_name]:>10.2f}"
    )
    if "usage_score_history" in med:
        h = "usage_score_history"
        print(f"{'usage, all days scored':<24}{med[h]:>10.2f}{med_cpu[h]:>10.2f}{'':>10}{peaks[h]:>10.2f}")
        print(
            f"usage backtest (every row) / hand-written query: {med[h] / med[ref_name]:.2f}x wall, "
            f"{med_cpu[h] / med_cpu[ref_name]:.2f}x cpu"
        )
    ratio = med["usage"] / med[ref_name]
    ratio_cpu = med_cpu["usage"] / med_cpu[ref_name]
    print(f"usage trip wire / hand-written query: {ratio:.2f}x wall, {ratio_cpu:.2f}x cpu (target <= 1.5x)")
    top = max(v for k, v in peaks.items() if k not in extra)
    print(
        f"memory: RSS {rss_before:.2f} GB with the data loaded, peak {top:.2f} GB while the trip wires ran "
        f"(+{top - rss_before:.2f} GB; target < 3 GB); process peak {peak_gb:.2f} GB, including data "
        "generation, the every-row backtest and the reference query, which are not part of a detection run"
    )
    print(
        f"all trip wires: {total:.2f} s wall, {total_cpu:.2f} s cpu (target < 15 s); load average {load:.1f}"
    )
    print(
        json.dumps(
            {
                "usage_rows": sizes["usage"],
                "invoice_rows": sizes["invoice"],
                "telemetry_rows": sizes["telemetry"],
                "seconds": {k: round(v, 3) for k, v in med.items()},
                "cpu_seconds": {k: round(v, 3) for k, v in med_cpu.items()},
                "total_seconds": round(total, 3),
                "total_cpu_seconds": round(total_cpu, 3),
                "usage_vs_reference": round(ratio, 3),
                "usage_vs_reference_cpu": round(ratio_cpu, 3),
                "load_average": round(load, 2),
                "peak_rss_gb": round(peak_gb, 3),
                "rss_with_data_gb": round(rss_before, 3),
                "peak_rss_detecting_gb": {k: round(v, 3) for k, v in peaks.items()},
                "findings": counts,
                "targets_met": {
                    "seconds_15": total < 15.0,
                    "peak_gb_3": top < 3.0,
                    "ratio_1_5": ratio <= 1.5,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
