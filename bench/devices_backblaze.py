"""The devices trip wire on real drives: Backblaze daily SMART snapshots, against the plain rule at equal FPR.

Usage::

    python bench/devices_backblaze.py --data ../shared/datasets/backblaze-smart   # any month, same shape
    python bench/devices_backblaze.py --data ... --fit                            # print fitted defaults

Each drive's daily snapshot becomes ``telemetry`` rows (device_id = serial number, attribute = smart_N_raw for
SMART 5, 187, 188, 197, 198 and 9, when the month has them). Every drive is judged at its last snapshot (the
failure day for failed drives, as in Backblaze's own statistic) using only readings up to then
(``device_features`` is point-in-time per row). The plain rule is what Backblaze's engineers use: "any of SMART
5, 187, 188, 197, 198 raw > 0". Recall = flagged failed drives / failed drives; false-positive rate (FPR) =
flagged working drives / working drives.

Parameters are chosen on part of the drives only: drives are split by serial number, stratified by failure
(a drive is never in both parts); on the training part, the L2 penalty is chosen by an inner cross-validation
by drive and the risk model fitted; the held-out part is scored, and the trip wire's threshold is set to the
rule's FPR on it (equal-FPR comparison: the same number of false alarms as the rule), and to 1% and 5% FPR.
The headline is the held-out half; repeated 5-fold cross-validation by drive gives the spread (there are few
failures). The shipped defaults are fitted on every drive (``--fit``); their figures on this month are
in-sample and printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from forewarn.detect.devices import FEATURES, WATCHED, DeviceTripWire, device_features, fit_risk_model  # noqa: E402

RULE = ["smart_5_raw", "smart_187_raw", "smart_188_raw", "smart_197_raw", "smart_198_raw"]
L2_GRID = (0.3, 3.0, 30.0, 300.0, 3000.0)


def parquet_of(data: Path) -> list[Path]:
    if data.is_file():
        return [data]
    files = sorted(data.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{data}: no Backblaze parquet file found (expected drive_stats_*.parquet)")
    return files


def load(data: Path, sample_working: int | None = None, seed: int = 0) -> pl.DataFrame:
    """The snapshots (date, serial_number, model, failure, the watched counters present in the file),
    optionally with only a sample of the working drives (all failed drives are always kept)."""
    frames = []
    for path in parquet_of(data):
        have = pl.read_parquet_schema(path)
        missing = [c for c in ("date", "serial_number", "model", "failure") if c not in have]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected Backblaze's drive_stats shape")
        attrs = [a for a in WATCHED if a in have]
        df = pl.read_parquet(path, columns=["date", "serial_number", "model", "failure", *attrs])
        frames.append(df.with_columns(pl.lit(None, pl.Float64).alias(a) for a in WATCHED if a not in attrs))
    df = pl.concat([f.select("date", "serial_number", "model", "failure", *WATCHED) for f in frames])
    if sample_working is not None:
        failed = df.filter(pl.col("failure") == 1)["serial_number"].unique()
        working = df.filter(~pl.col("serial_number").is_in(failed.implode()))["serial_number"].unique().sort()
        keep = pl.concat([failed, working.sample(min(sample_working, working.len()), seed=seed)])
        df = df.filter(pl.col("serial_number").is_in(keep.implode()))
    return df


def to_telemetry(df: pl.DataFrame) -> pl.DataFrame:
    """Wide daily snapshots -> long ``telemetry`` signal rows."""
    long = df.unpivot(index=["date", "serial_number", "model"], on=list(WATCHED), variable_name="attribute")
    return long.filter(pl.col("value").is_not_null()).select(
        event_id=pl.format("{}-{}-{}", "serial_number", "date", "attribute"),
        customer_id=pl.lit("backblaze"),
        ts=pl.col("date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        device_id=pl.col("serial_number"),
        attribute=pl.col("attribute"),
        value=pl.col("value"),
        model=pl.col("model"),
    )


def judged(df: pl.DataFrame) -> pl.DataFrame:
    """One row per drive at its last snapshot: ``failed``, the plain rule, and every feature (computed from
    that drive's readings up to then)."""
    feats = device_features(to_telemetry(df)).select(
        pl.col("device_id").alias("serial_number"), pl.col("ts").dt.date().alias("date"), *FEATURES
    )
    last = df.group_by("serial_number").agg(
        failed=(pl.col("failure") == 1).any(), date=pl.col("date").max(), model=pl.col("model").last()
    )
    plain = df.select(
        "serial_number", "date", rule=pl.any_horizontal([pl.col(a).fill_null(0) > 0 for a in RULE])
    )
    out = last.join(plain, on=["serial_number", "date"], how="left").join(
        feats, on=["serial_number", "date"], how="left"
    )
    return out.with_columns(pl.col(*FEATURES).fill_null(0.0), pl.col("rule").fill_null(False)).sort(
        "serial_number"
    )


def folds(failed: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number per drive, stratified by failure (one row per drive, so grouped by serial)."""
    fold = np.empty(len(failed), dtype=np.int64)
    for label in (True, False):
        idx = np.flatnonzero(failed == label)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def risk(x: np.ndarray, intercept: float, coef: dict[str, float]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(intercept + x @ np.array([coef[f] for f in FEATURES]))))


def recall_at_fpr(score: np.ndarray, failed: np.ndarray, fpr: float) -> tuple[float, float, float]:
    """Recall, achieved FPR and threshold of the highest-recall cut whose FPR on these working drives is at
    most ``fpr`` (ties are flagged together, so never more false alarms than allowed)."""
    neg = np.sort(score[~failed])[::-1]
    allowed = int(np.floor(fpr * len(neg) + 1e-9))
    # the cut is just above the (allowed+1)-th highest working score
    thr = np.nextafter(neg[allowed], np.inf) if allowed < len(neg) else -np.inf
    flagged = score >= thr
    return float(flagged[failed].mean()), float(flagged[~failed].mean()), float(thr)


def choose_l2(x: np.ndarray, y: np.ndarray, rule: np.ndarray, rng: np.random.Generator) -> float:
    """The L2 penalty with the best pooled inner-cross-validated recall at the rule's FPR (ties: larger)."""
    fold = folds(y, 4, rng)
    best, best_l2 = -1.0, L2_GRID[-1]
    for l2 in sorted(L2_GRID, reverse=True):
        score = np.empty(len(y))
        for f in range(4):
            tr = fold != f
            b, w = fit_risk_model(pl.DataFrame(x[tr], schema=list(FEATURES), orient="row"), y[tr], l2=l2)
            score[~tr] = risk(x[~tr], b, w)
        rec = recall_at_fpr(score, y, float(rule[~y].mean()))[0]
        if rec > best + 1e-9:
            best, best_l2 = rec, l2
    return best_l2


def fit(
    x: np.ndarray, y: np.ndarray, rule: np.ndarray, rng: np.random.Generator
) -> tuple[float, dict, float]:
    l2 = choose_l2(x, y, rule, rng)
    b, w = fit_risk_model(pl.DataFrame(x, schema=list(FEATURES), orient="row"), y, l2=l2)
    return b, w, l2


def held_out(j: pl.DataFrame, seed: int) -> dict[str, object]:
    """Fit on half the drives (stratified by failure), score the other half."""
    x = j.select(FEATURES).to_numpy().astype(np.float64)
    y = j["failed"].to_numpy()
    rule = j["rule"].to_numpy()
    rng = np.random.default_rng(seed)
    test = folds(y, 2, rng) == 1
    b, w, l2 = fit(x[~test], y[~test], rule[~test], rng)
    score = risk(x[test], b, w)
    yt, rt = y[test], rule[test]
    rule_fpr = float(rt[~yt].mean())
    out: dict[str, object] = {
        "l2": l2,
        "intercept": b,
        "coefficients": w,
        "failed": int(yt.sum()),
        "working": int((~yt).sum()),
        "rule_recall": float(rt[yt].mean()),
        "rule_fpr": rule_fpr,
    }
    rec, fpr, thr = recall_at_fpr(score, yt, rule_fpr)
    out.update(recall_at_rule_fpr=rec, fpr_at_rule_fpr=fpr)
    for at in (0.01, 0.05):
        out[f"recall_at_{round(at * 100)}pct_fpr"] = recall_at_fpr(score, yt, at)[0]
    flagged = score >= thr
    sub = j.filter(pl.Series(test)).with_columns(wire=pl.Series(flagged), score=pl.Series(score))
    out["failures"] = sub.filter(pl.col("failed")).select(
        "serial_number", "model", "rule", "wire", "score", *FEATURES
    )
    return out


def cross_validated(j: pl.DataFrame, repeats: int, k: int = 5) -> pl.DataFrame:
    """Per repeat: pooled out-of-fold recall of the trip wire at the rule's FPR, 1% and 5% FPR."""
    x = j.select(FEATURES).to_numpy().astype(np.float64)
    y = j["failed"].to_numpy()
    rule = j["rule"].to_numpy()
    rows = []
    for r in range(repeats):
        rng = np.random.default_rng(1000 + r)
        fold = folds(y, k, rng)
        score = np.empty(len(y))
        for f in range(k):
            tr = fold != f
            b, w, _ = fit(x[tr], y[tr], rule[tr], rng)
            score[~tr] = risk(x[~tr], b, w)
        rule_fpr = float(rule[~y].mean())
        rows.append(
            {
                "repeat": r,
                "rule_recall": float(rule[y].mean()),
                "recall_at_rule_fpr": recall_at_fpr(score, y, rule_fpr)[0],
                "recall_at_1pct_fpr": recall_at_fpr(score, y, 0.01)[0],
                "recall_at_5pct_fpr": recall_at_fpr(score, y, 0.05)[0],
                "rule_only": int((rule & ~(score >= recall_at_fpr(score, y, rule_fpr)[2]))[y].sum()),
                "wire_only": int((~rule & (score >= recall_at_fpr(score, y, rule_fpr)[2]))[y].sum()),
            }
        )
    return pl.DataFrame(rows)


def shipped(j: pl.DataFrame, df: pl.DataFrame) -> dict[str, float]:
    """The shipped defaults (``DeviceTripWire()``) at their own threshold, through the trip wire itself:
    in-sample for April (they were fitted on it), out-of-sample for any other month."""
    wire = DeviceTripWire()
    t0 = time.perf_counter()
    hist = wire.risk_history(to_telemetry(df)).select(
        serial_number="device_id", date=pl.col("ts").dt.date(), fires="fires"
    )
    seconds = time.perf_counter() - t0
    s = j.join(hist, on=["serial_number", "date"], how="left").with_columns(pl.col("fires").fill_null(False))
    pos, neg = s.filter(pl.col("failed")), s.filter(~pl.col("failed"))
    return {
        "default_recall": float(pos["fires"].mean() or 0.0),
        "default_fpr": float(neg["fires"].mean() or 0.0),
        "wire_seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/backblaze-smart"))
    ap.add_argument("--sample-working", type=int, default=None, help="judge only this many working drives")
    ap.add_argument("--repeats", type=int, default=10, help="repeats of 5-fold cross-validation by drive")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    ap.add_argument("--fit", action="store_true", help="also fit on every drive and print the coefficients")
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = load(args.data, args.sample_working)
    t1 = time.perf_counter()
    j = judged(df)
    feature_s = time.perf_counter() - t1
    ho = held_out(j, args.seed)
    cv = cross_validated(j, args.repeats)
    sh = shipped(j, df)
    rule_fpr_all = float(j.filter(~pl.col("failed"))["rule"].mean())
    pct = lambda v: f"{v:.1%}"  # noqa: E731
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"drives: {int(j['failed'].sum())} failed, {int((~j['failed']).sum())} working; {df.height} drive-days; "
        f"features of every drive-day {feature_s:.2f} s"
    )
    print(
        f"the trip wire itself over {df.height:,} drive-days: {sh['wire_seconds']:.2f} s "
        f"({sh['wire_seconds'] / feature_s:.2f}x the features alone)"
    )
    print()
    print(f"held-out half (seed {args.seed}; l2 {ho['l2']} chosen on the training half):")
    print(f"  {ho['failed']} failed, {ho['working']} working drives")
    print(f"  plain rule:                 recall {pct(ho['rule_recall'])} at FPR {ho['rule_fpr']:.2%}")
    print(
        f"  trip wire at the rule's FPR: recall {pct(ho['recall_at_rule_fpr'])} "
        f"(FPR {ho['fpr_at_rule_fpr']:.2%})"
    )
    print(f"  trip wire at 1% FPR:        recall {pct(ho['recall_at_1pct_fpr'])}")
    print(f"  trip wire at 5% FPR:        recall {pct(ho['recall_at_5pct_fpr'])}")
    fails = ho["failures"]
    assert isinstance(fails, pl.DataFrame)
    for who, cond in (
        ("only the trip wire", pl.col("wire") & ~pl.col("rule")),
        ("only the rule", ~pl.col("wire") & pl.col("rule")),
        ("both", pl.col("wire") & pl.col("rule")),
        ("neither", ~pl.col("wire") & ~pl.col("rule")),
    ):
        sub = fails.filter(cond)
        print(f"  failures caught by {who}: {sub.height}")
        if who.startswith("only"):
            for r in sub.iter_rows(named=True):
                signs = ", ".join(f"{f} {r[f]:.2f}" for f in FEATURES if r[f])
                print(f"    {r['serial_number']} ({r['model']}): risk {r['score']:.3f}; {signs or 'no sign'}")
    print()
    print(
        f"repeated 5-fold cross-validation by drive ({args.repeats} repeats, pooled out-of-fold per repeat):"
    )
    for col in ("recall_at_rule_fpr", "recall_at_1pct_fpr", "recall_at_5pct_fpr", "wire_only", "rule_only"):
        s = cv[col]
        if col.startswith("recall"):
            print(f"  {col:<20} median {pct(s.median())}, range {pct(s.min())}-{pct(s.max())}")
        else:
            print(f"  failures {col:<11} median {s.median():.0f}, range {s.min()}-{s.max()}")
    print(f"  plain rule recall {pct(cv['rule_recall'][0])} at FPR {rule_fpr_all:.2%} (all drives)")
    print()
    print(
        f"shipped defaults at their own threshold, all drives (in-sample when this is April 2013): recall "
        f"{pct(sh['default_recall'])} at FPR {sh['default_fpr']:.2%}"
    )
    if args.fit:
        rng = np.random.default_rng(args.seed)
        x = j.select(FEATURES).to_numpy().astype(np.float64)
        y, rule = j["failed"].to_numpy(), j["rule"].to_numpy()
        b, w, l2 = fit(x, y, rule, rng)
        print(f"fitted on every drive (l2 {l2}): intercept {b:.4f}")
        print("  " + json.dumps({k: round(v, 4) for k, v in w.items()}))
    res = {
        "rule_recall": round(float(ho["rule_recall"]), 4),
        "rule_fpr": round(float(ho["rule_fpr"]), 5),
        "recall_at_rule_fpr": round(float(ho["recall_at_rule_fpr"]), 4),
        "fpr_at_rule_fpr": round(float(ho["fpr_at_rule_fpr"]), 5),
        "recall_at_1pct_fpr": round(float(ho["recall_at_1pct_fpr"]), 4),
        "recall_at_5pct_fpr": round(float(ho["recall_at_5pct_fpr"]), 4),
        "heldout_failed": ho["failed"],
        "heldout_working": ho["working"],
        "cv_recall_at_rule_fpr_median": round(float(cv["recall_at_rule_fpr"].median()), 4),
        "cv_recall_at_rule_fpr_min": round(float(cv["recall_at_rule_fpr"].min()), 4),
        "cv_recall_at_rule_fpr_max": round(float(cv["recall_at_rule_fpr"].max()), 4),
        "cv_rule_recall": round(float(cv["rule_recall"][0]), 4),
        "cv_rule_fpr": round(rule_fpr_all, 5),
        "default_recall": round(sh["default_recall"], 4),
        "default_fpr": round(sh["default_fpr"], 5),
        "wire_seconds": round(sh["wire_seconds"], 3),
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
