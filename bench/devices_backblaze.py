"""The devices trip wire on real drives: Backblaze daily SMART snapshots (2013-04-10..30, 43 failures).

Usage::

    python bench/devices_backblaze.py --data ../shared/datasets/backblaze-smart

Each drive's daily snapshot becomes ``telemetry`` rows (device_id = serial number, attribute = smart_N_raw
for SMART 5, 187, 188, 197, 198). Every drive is judged at its last snapshot (the failure day for failed
drives, as in Backblaze's own statistic) and, for lead time, at its last snapshot *before* that day, using
only readings up to then (``DeviceTripWire.risk_history`` is point-in-time per row). Reported beside the
plain rule Backblaze's engineers use: "any of SMART 5, 187, 188, 197, 198 raw > 0". Recall = flagged failed
drives / failed drives; false-positive rate = flagged working drives / working drives.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from forewarn.detect.devices import DeviceTripWire  # noqa: E402

ATTRS = ["smart_5_raw", "smart_187_raw", "smart_188_raw", "smart_197_raw", "smart_198_raw"]
FILE = "drive_stats_2013-04.parquet"


def load(data: Path, sample_working: int | None = None, seed: int = 0) -> pl.DataFrame:
    """The snapshots (date, serial_number, model, failure, the five counters), optionally with only a sample
    of the working drives (all failed drives are always kept)."""
    path = data / FILE if data.is_dir() else data
    if not path.exists():
        raise FileNotFoundError(f"{path}: Backblaze parquet not found (expected {FILE} under --data)")
    df = pl.read_parquet(path, columns=["date", "serial_number", "model", "failure", *ATTRS])
    if sample_working is not None:
        failed = df.filter(pl.col("failure") == 1)["serial_number"].unique()
        working = df.filter(~pl.col("serial_number").is_in(failed.implode()))["serial_number"].unique().sort()
        keep = pl.concat([failed, working.sample(min(sample_working, working.len()), seed=seed)])
        df = df.filter(pl.col("serial_number").is_in(keep.implode()))
    return df


def to_telemetry(df: pl.DataFrame) -> pl.DataFrame:
    """Wide daily snapshots -> long ``telemetry`` signal rows."""
    long = df.unpivot(index=["date", "serial_number", "model"], on=ATTRS, variable_name="attribute")
    return long.filter(pl.col("value").is_not_null()).select(
        event_id=pl.format("{}-{}-{}", "serial_number", "date", "attribute"),
        customer_id=pl.lit("backblaze"),
        ts=pl.col("date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        device_id=pl.col("serial_number"),
        attribute=pl.col("attribute"),
        value=pl.col("value"),
        model=pl.col("model"),
    )


def evaluate(df: pl.DataFrame, wire: DeviceTripWire | None = None) -> dict[str, float | int]:
    """Recall and false-positive rate of the trip wire and of the plain rule, at the last snapshot and a day
    earlier."""
    wire = wire or DeviceTripWire()
    failed = df.group_by("serial_number").agg(failed=(pl.col("failure") == 1).any())
    days = df.select("serial_number", "date").unique().sort("serial_number", "date")
    last = days.group_by("serial_number").agg(
        last=pl.col("date").max(), before=pl.col("date").filter(pl.col("date") < pl.col("date").max()).max()
    )
    t0 = time.perf_counter()
    hist = wire.risk_history(to_telemetry(df)).select(
        serial_number="device_id", date=pl.col("ts").dt.date(), fires="fires", risk="risk"
    )
    seconds = time.perf_counter() - t0
    plain = df.select(
        "serial_number", "date", plain=pl.any_horizontal([pl.col(a).fill_null(0) > 0 for a in ATTRS])
    )
    out: dict[str, float | int] = {"wire_seconds": round(seconds, 3)}
    for when in ("last", "before"):
        at = last.select("serial_number", date=pl.col(when)).drop_nulls()
        judged = (
            at.join(failed, on="serial_number")
            .join(hist, on=["serial_number", "date"], how="left")
            .join(plain, on=["serial_number", "date"], how="left")
            .with_columns(pl.col("fires").fill_null(False), pl.col("plain").fill_null(False))
        )
        pos = judged.filter(pl.col("failed"))
        neg = judged.filter(~pl.col("failed"))
        for rule in ("fires", "plain"):
            name = "wire" if rule == "fires" else "plain"
            out[f"{name}_recall_{when}"] = round(float(pos[rule].mean() or 0.0), 4)
            out[f"{name}_fpr_{when}"] = round(float(neg[rule].mean() or 0.0), 5)
        out[f"failed_{when}"] = pos.height
        out[f"working_{when}"] = neg.height
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/backblaze-smart"))
    ap.add_argument("--sample-working", type=int, default=None, help="judge only this many working drives")
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = load(args.data, args.sample_working)
    res = evaluate(df)
    total = time.perf_counter() - t0
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"drives: {res['failed_last']} failed, {res['working_last']} working; {df.height} drive-days")
    print(f"devices trip wire over {df.height * len(ATTRS):,} telemetry rows: {res['wire_seconds']:.2f} s")
    print()
    print(f"{'rule':<52}{'recall (failed)':>16}{'FP rate (working)':>20}")
    for when, label in (("last", "at the last snapshot"), ("before", "a day before")):
        print(
            f"{'devices trip wire, ' + label:<52}{res[f'wire_recall_{when}']:>16.1%}"
            f"{res[f'wire_fpr_{when}']:>20.2%}"
        )
        print(
            f"{'any SMART 5/187/188/197/198 > 0, ' + label:<52}{res[f'plain_recall_{when}']:>16.1%}"
            f"{res[f'plain_fpr_{when}']:>20.2%}"
        )
    print("published (Backblaze fleet, plain rule): 76.7% of failed vs 4.2% of working drives")
    res["total_seconds"] = round(total, 2)
    if res["plain_fpr_last"]:
        res["fpr_ratio_wire_vs_plain"] = round(res["wire_fpr_last"] / res["plain_fpr_last"], 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
