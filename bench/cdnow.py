"""BG/NBD on the CDNOW sample: reproduce Fader, Hardie & Lee (2005) and check P(alive) against `lifetimes`.

Reads ``CDNOW_sample.txt`` (master id, customer id, yyyymmdd, CDs, dollars per line) and
``reference_bgnbd.json`` from ``--data``; weekly units, calibration weeks 1-39 (to 1997-09-30), holdout
weeks 40-78 (1997-10-01 to 1998-06-30), same-day purchases merged. Prints the fitted parameters against the
published ones (pass: within 1%), the P(alive) comparison with the `lifetimes` package when it is installed
(the optional extra ``oracle``), the holdout table by calibration frequency beside the published one,
timings, and as its last line a JSON object with r, alpha, a, b and log_likelihood.

    .venv/bin/python bench/cdnow.py --data ../shared/datasets/cdnow

Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

# A 4-parameter L-BFGS-B spends most of its time in OpenBLAS thread hand-offs on a busy 2-core machine
# (~15x slower); one BLAS thread is what a per-bucket detection worker uses anyway. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from forewarn.detect import bgnbd  # noqa: E402

CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)
HOLDOUT_WEEKS = (HOLDOUT_END - CALIBRATION_END).days / 7  # 39
BINS = ["0", "1", "2", "3", "4", "5", "6", "7+"]
TOLERANCE = 0.01  # relative, on each parameter
P_ALIVE_TOLERANCE = 1e-4


def default_data_dir() -> Path:
    relative = Path("../shared/datasets/cdnow")
    if relative.exists():
        return relative
    return Path(__file__).resolve().parents[1] / relative


def load_transactions(path: Path) -> pl.DataFrame:
    """CDNOW transactions as (customer_id, ts: date, quantity, amount); a clear error on a malformed line."""
    rows: list[tuple[str, date, int, float]] = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 5:
                raise ValueError(
                    f"{path}:{lineno}: expected 5 fields (master id, id, yyyymmdd, CDs, dollars)"
                )
            raw = parts[2]
            try:
                day = date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: field 3 (date) is {raw!r}, expected yyyymmdd") from None
            try:
                rows.append((parts[1], day, int(parts[3]), float(parts[4])))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: fields 4-5 must be a count and an amount") from None
    return pl.DataFrame(rows, schema=["customer_id", "ts", "quantity", "amount"], orient="row")


def holdout_counts(tx: pl.DataFrame) -> pl.DataFrame:
    """Purchase days per customer in the holdout (same-day purchases merged)."""
    return (
        tx.filter((pl.col("ts") > CALIBRATION_END) & (pl.col("ts") <= HOLDOUT_END))
        .select("customer_id", "ts")
        .unique()
        .group_by("customer_id")
        .agg(pl.len().alias("holdout"))
    )


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="folder with CDNOW_sample.txt")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median reported)")
    args = parser.parse_args(argv)

    sample = args.data / "CDNOW_sample.txt"
    reference_path = args.data / "reference_bgnbd.json"
    for needed in (sample, reference_path):
        if not needed.exists():
            print(f"missing {needed}: pass --data DIR holding the CDNOW files", file=sys.stderr)
            return 2
    reference = json.loads(reference_path.read_text())
    published = reference["bgnbd_published"]
    ok = True

    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} cpus")
    tx = load_transactions(sample)
    summary = bgnbd.summarize(tx, CALIBRATION_END, unit_days=7.0)
    x, t_x, T = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    print(
        f"data: {tx.height} transactions, {summary.height} customers, "
        f"{int(x.sum())} repeat purchase days in calibration (weeks 1-39)"
    )

    model = bgnbd.fit(x, t_x, T)
    fit_s = median_time(lambda: bgnbd.fit(x, t_x, T), args.repeats)
    print(f"\nBG/NBD fit (median of {args.repeats}): {fit_s * 1000:.1f} ms")
    print(f"{'param':<8}{'fitted':>12}{'published':>12}{'rel.err':>10}")
    for name in ("r", "alpha", "a", "b"):
        ours, theirs = getattr(model, name), published[name]
        rel = abs(ours - theirs) / theirs
        ok &= rel <= TOLERANCE
        print(f"{name:<8}{ours:>12.4f}{theirs:>12.3f}{rel:>9.2%}{'' if rel <= TOLERANCE else '  FAIL'}")
    print(f"{'LL':<8}{model.log_likelihood:>12.1f}{published['LL']:>12.1f}")

    ours_alive = bgnbd.p_alive(model, x, t_x, T)
    oracle: dict[str, float | None] = {"p_alive_max_abs_diff": None, "lifetimes_fit_ms": None}
    try:
        from lifetimes import BetaGeoFitter  # the optional extra "oracle", a test oracle only
    except ImportError:
        print("\nlifetimes not installed, oracle check skipped")
    else:
        fitter = BetaGeoFitter()
        fitter.fit(x, t_x, T)
        theirs_alive = np.asarray(fitter.conditional_probability_alive(x, t_x, T), dtype=np.float64)
        diff = float(np.max(np.abs(ours_alive - theirs_alive)))
        same = bgnbd.BGNBDParams(*(float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")))
        formula_diff = float(np.max(np.abs(bgnbd.p_alive(same, x, t_x, T) - theirs_alive)))
        lt_s = median_time(lambda: BetaGeoFitter().fit(x, t_x, T), max(1, args.repeats // 2))
        oracle = {"p_alive_max_abs_diff": diff, "lifetimes_fit_ms": lt_s * 1000}
        ok &= diff <= P_ALIVE_TOLERANCE
        print(
            f"\nP(alive) vs lifetimes {fitter.params_.to_dict()}:\n"
            f"  each with its own fit: max |diff| = {diff:.2e} over {len(x)} customers "
            f"({'ok' if diff <= P_ALIVE_TOLERANCE else 'FAIL'}, tolerance {P_ALIVE_TOLERANCE:g})\n"
            f"  same parameters (formula only): max |diff| = {formula_diff:.2e}\n"
            f"  fit time: ours {fit_s * 1000:.1f} ms, lifetimes {lt_s * 1000:.1f} ms, "
            f"ratio {fit_s / lt_s:.2f}"
        )

    predicted = bgnbd.conditional_expected_purchases(model, HOLDOUT_WEEKS, x, t_x, T)
    table = (
        summary.select("customer_id", "frequency")
        .with_columns(pl.Series("predicted", predicted))
        .join(holdout_counts(tx), on="customer_id", how="left")
        .with_columns(
            pl.col("holdout").fill_null(0),
            pl.when(pl.col("frequency") >= 7)
            .then(pl.lit("7+"))
            .otherwise(pl.col("frequency").cast(pl.String))
            .alias("bin"),
        )
        .group_by("bin")
        .agg(pl.len().alias("n"), pl.col("holdout").mean().alias("actual"), pl.col("predicted").mean())
    )
    by_bin = {row["bin"]: row for row in table.iter_rows(named=True)}
    ref = reference["holdout_by_calibration_frequency_btyd"]
    print(f"\nholdout weeks 40-78 ({HOLDOUT_WEEKS:.0f} weeks), mean purchases by calibration frequency")
    print(f"{'freq':<6}{'n':>6}{'actual':>9}{'BG/NBD':>9}  |{'pub n':>7}{'pub act':>9}{'pub BG/NBD':>11}")
    for i, name in enumerate(BINS):
        row = by_bin.get(name, {"n": 0, "actual": float("nan"), "predicted": float("nan")})
        print(
            f"{name:<6}{row['n']:>6}{row['actual']:>9.3f}{row['predicted']:>9.3f}  |"
            f"{ref['n_customers'][i]:>7}{ref['actual_mean_holdout'][i]:>9.3f}"
            f"{ref['bgnbd_conditional_expectation'][i]:>11.3f}"
        )
    total_actual = int(table["actual"].dot(table["n"]))
    print(f"total holdout: actual {total_actual}, predicted {float(predicted.sum()):.1f}")

    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    figures = {
        "r": model.r,
        "alpha": model.alpha,
        "a": model.a,
        "b": model.b,
        "log_likelihood": model.log_likelihood,
        "fit_ms": fit_s * 1000,
        **oracle,
        "holdout_actual_total": total_actual,
        "holdout_predicted_total": float(predicted.sum()),
        "ok": bool(ok),
    }
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
