"""The usage trip wire: a metered value far from the customer's own baseline.

Four conditions per (customer, metric), judged against the trailing robust baseline of
``forewarn.detect.baseline`` (weekly-seasonal for daily data), silent until the series has enough history:

- ``spike``: today is ``z_threshold`` robust z-scores above the usual level and at least ``min_ratio`` x it;
- ``drop``: today is ``drop_z_threshold`` below and at most ``max_drop_ratio`` x the usual level;
- ``level_shift``: the median of the last ``shift_window`` periods has moved ``shift_z`` spreads (and at least
  ``shift_min_change`` of the level) away from the baseline before them: a sustained change, not one odd day;
- ``silent``: zero (or no reading) for ``silent_periods`` periods in a row after a non-zero baseline.

A drop or silence is one episode until usage recovers (``hold_periods``, ``recover_ratio``): every later period
still under ``recover_ratio`` x the level before it stays a ``drop`` judged against that level (the trailing
baseline would absorb it within days), and coming back is not a spike. So the live window reaches back
``hold_periods`` further than the baseline does.

The trip wire tells a customer of a spike or drop only when it is one in log space too (``relative_z``: usage
noise is multiplicative, so additive z lets the long right tail of ordinary days through) and against the
same weekday's level (``same_season_check``: a customer's usual weekend is not a spike). The core does not.

The generic core, :func:`score_series` / :func:`detect_series`, works on any (keys, ts, value) frame, so the
same detector runs on service-level series (``service_metric``: per service, region and metric) for outage
detection.

>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> days = 70
>>> f = pl.DataFrame({"customer_id": ["c1"] * days, "metric": ["data_gb"] * days,
...     "ts": [t0 + timedelta(days=i) for i in range(days)],
...     "value": [7.0 + (i % 3) * 0.2 for i in range(days - 1)] + [41.2]})
>>> out = UsageTripWire().detect({"usage": f}, t0 + timedelta(days=days - 1))
>>> out.select("condition", "severity").row(0)
('usage:spike:data_gb', 'warning')
>>> print(out["explanation"][0])
Your data use on 2026-03-10 was 41.2 GB, about 5.7x your usual 7.2 GB a day.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from forewarn.detect.base import Params, as_findings, empty_findings, params_with, point_in_time
from forewarn.detect.baseline import (
    SEASON_LAGS,
    group_starts,
    lag,
    latest_rows,
    sort_series,
    trailing_baseline,
    with_positions,
)

# periods at the end of a series whose core scores the live path computes exactly from its tail
RECENT_PERIODS = 7
PERIOD_EVERY = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
PERIOD_SEASON = {"hour": 24, "day": 7, "week": None, "month": None}
PERIOD_WORD = {"hour": "an hour", "day": "a day", "week": "a week", "month": "a month"}
METRIC_LABEL = {
    "data_gb": "data use",
    "minutes": "call minutes",
    "api_calls": "API calls",
    "sms": "text messages",
}
METRIC_UNIT = {"data_gb": "GB", "minutes": "min"}


@dataclass(frozen=True)
class UsageParams(Params):
    """Parameters of the usage detector; the defaults suit daily usage of consumer services."""

    window: int = 21  # periods in the trailing median (the customer's usual level)
    scale_window: int = 14  # periods of one-step residuals averaged for the spread
    season: int | None = 7  # season length in periods (7 = weekly for daily data); None: no seasonality
    z_threshold: float = 4.0  # robust z beyond which one period is a spike
    drop_z_threshold: float = 3.0  # ... and a drop (usage noise is multiplicative: drops have less room)
    # the additive z a drop needs in the core (None: drop_z_threshold); under multiplicative noise a drop to 0
    # is only 1 / (relative noise) spreads down, so the trip wire judges drops in log space instead
    drop_additive_z: float | None = 2.0
    # what is worth telling a customer: at least 2.5x (or at most 40%) of the usual level in a period, or a
    # lasting move of at least 50%; with multiplicative day-to-day noise, smaller moves happen by chance (2x
    # days are one in ~1,000 at 22% noise: over a customer base, most "spikes" at 2x were ordinary days)
    min_ratio: float = 2.5  # a spike is also at least this many times the usual level
    max_drop_ratio: float = 0.4  # a drop is also at most this fraction of the usual level
    min_abs_change: float = 0.0  # and differs from the usual level by at least this much (in value units)
    shift_window: int = 7  # periods whose median must have moved for a level shift
    shift_z: float = 3.0  # ... by this many spreads
    shift_min_change: float = 0.5  # ... and by at least this fraction of the old level
    silent_periods: int = 3  # zero / missing periods in a row that make "went silent"
    fill_gaps: bool = True  # a missing period counts as zero usage (needs a regular ``every``)
    every: str = "1d"  # the period length of the series (a Polars duration string)
    min_scale_rel: float = 0.05  # spread floor as a fraction of the level
    # A drop (or silence) is one episode until usage recovers: its later periods are judged against the level
    # before it, which the trailing baseline would otherwise absorb within days (the drop would fade into the
    # customer's "usual"). It ends at the first period back at ``recover_ratio`` x that level, or after
    # ``hold_periods`` (then the new level is the usual one); 0 turns holding off.
    hold_periods: int = 90
    recover_ratio: float = 0.5
    # The trip wire only (``score_series`` ignores these): what makes a spike or drop worth a message.
    # Usage noise is multiplicative, so a ratio's size is judged in log space too: a spike also needs
    # ln(value / usual) >= z_threshold x the robust spread of ln(value / usual) over the last scale_window
    # periods, a drop -ln(...) >= drop_z_threshold x it; additive z alone lets the long right tail of ordinary
    # days through.
    relative_z: bool = True
    # A spike or drop must also be one against the customer's own same-weekday level (the median of the same
    # weekday 1-4 seasons back, and its spread): a customer's usual weekend is not a spike, even when the flat
    # model (chosen when the weekly pattern is weak against the noise) puts the usual level at the weekday's.
    same_season_check: bool = True


def _fill_gaps(
    frame: pl.DataFrame, keys: Sequence[str], value: str, every: str, end: datetime | None
) -> pl.DataFrame:
    """Missing periods become value-0 rows, from each series' first period to ``end`` (default: frame max)."""
    if frame.height == 0:
        return frame
    end_ts = frame["ts"].max() if end is None else end
    spans = frame.group_by(keys).agg(first=pl.col("ts").min(), n=pl.len())
    # cheap exit when every series is already complete (the common case for a daily feed)
    step = _fixed_step(every)
    if step is not None:
        expected_n = ((pl.lit(end_ts) - pl.col("first")).dt.total_microseconds() // step + 1).alias("e")
    else:
        expected_n = pl.datetime_ranges(pl.col("first"), pl.lit(end_ts), interval=every).list.len().alias("e")
    if (spans.select(expected_n).to_series() == spans["n"]).all():
        return frame
    if step is not None:
        filled = _fill_fixed_steps(frame, keys, value, step, end_ts)
        if filled is not None:
            return filled
    grid = spans.select(
        *keys, ts=pl.datetime_ranges(pl.col("first"), pl.lit(end_ts), interval=every)
    ).explode("ts")
    out = grid.join(frame, on=[*keys, "ts"], how="left", maintain_order="left")
    return out.with_columns(pl.col(value).fill_null(0.0))


def _fill_fixed_steps(
    frame: pl.DataFrame, keys: Sequence[str], value: str, step_us: int, end: datetime
) -> pl.DataFrame | None:
    """``_fill_gaps`` by array arithmetic for a frame of just (keys, ts, value) sorted by (keys, ts) with one
    row per (keys, ts), a UTC (or naive) ``ts`` and a fixed step: each row goes to its period's slot in the
    series' grid (rows off the grid or after ``end`` are left out, as the grid join leaves them out).
    None when the frame is not of that shape (the caller joins on a grid instead)."""
    ts_type = frame.schema["ts"]
    if (
        set(frame.columns) != {*keys, "ts", value}
        or not isinstance(ts_type, pl.Datetime)
        or ts_type.time_zone not in (None, "UTC")
        or frame.schema[value] != pl.Float64
        or frame.select(pl.any_horizontal(pl.col(*keys, "ts").is_null().any())).item()
    ):
        return None  # (null keys or times do not join: the grid join's way with them is kept)
    per_us = {"us": 1, "ms": 1_000, "ns": 0}[ts_type.time_unit]
    if per_us == 0 or step_us % per_us:
        return None
    step = step_us // per_us  # in the column's own unit
    ts = frame["ts"].to_physical().to_numpy()
    starts = group_starts(frame, keys)
    first_row = np.flatnonzero(starts)
    series = np.cumsum(starts) - 1  # series number of each row
    first = ts[first_row]
    end_v = pl.Series([end]).cast(ts_type).to_physical().item()
    size = np.maximum((end_v - first) // step + 1, 0)  # grid periods per series
    slot0 = np.concatenate([[0], np.cumsum(size)[:-1]])
    since = ts - first[series]
    k = since // step
    keep = (since % step == 0) & (k < size[series])
    total = int(size.sum())
    out_series = np.repeat(np.arange(first_row.size), size)
    out_ts = first[out_series] + (np.arange(total, dtype=np.int64) - slot0[out_series]) * step
    out_value = np.zeros(total, dtype=np.float64)
    out_value[(slot0[series] + k)[keep]] = frame[value].fill_null(0.0).to_numpy()[keep]
    return (
        frame.select(keys)
        .gather(first_row[out_series])
        .with_columns(
            pl.Series("ts", out_ts).cast(ts_type),
            pl.Series(value, out_value, dtype=pl.Float64),
        )
        .select(frame.columns)
    )


def _fixed_step(every: str) -> int | None:
    """Microseconds in a fixed-length Polars duration ("1d", "5m", "1h"); None for calendar ones ("1mo")."""
    units = {"w": 604_800_000_000, "d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000}
    num = every.rstrip("wdhms")
    unit = every[len(num) :]
    if not num.isdigit() or unit not in units:
        return None
    return int(num) * units[unit]


def _sorted_by(frame: pl.DataFrame, cols: Sequence[str]) -> bool:
    """Whether ``frame`` is already sorted by ``cols`` (lexicographically), without sorting it."""
    if frame.height < 2:
        return True
    ok = pl.lit(False)
    equal_so_far = pl.lit(True)
    for c in cols:
        prev = pl.col(c).shift(1)
        ok = ok | (equal_so_far & (pl.col(c) > prev))
        equal_so_far = equal_so_far & (pl.col(c) == prev)
    ok = ok | equal_so_far
    return bool(frame.select(ok.slice(1).all()).item())


def tail_periods(params: UsageParams) -> int:
    """How many earlier periods a row's scores can depend on (besides a zero run's start and the history
    count, which is capped at this number in findings): the baseline's reach, plus a held drop's."""
    return _baseline_reach(params) + max(params.hold_periods, 0)


def _baseline_reach(params: UsageParams) -> int:
    """How many earlier periods a row's core scores (before holding drops) can depend on."""
    p = params
    season = (p.season or 0) * SEASON_LAGS
    reach = max(
        p.window + p.scale_window, season + p.scale_window, p.shift_window - 1 + p.window + p.scale_window
    )
    return reach + 1


def score_series(
    frame: pl.DataFrame,
    key_cols: Sequence[str],
    value_col: str = "value",
    params: UsageParams | None = None,
    *,
    ts_col: str = "ts",
    end: datetime | None = None,
    keep_season: bool = False,
    log_scale: bool = False,
) -> pl.DataFrame:
    """Score every (series, time) of ``frame`` from trailing windows: one row per (keys, ts) with

    ``expected``, ``scale``, ``z``, ``seasonal``, ``recent_median``/``shift_base``/``shift_z`` (level shift),
    ``zero_run``/``silent_base`` (went silent), ``history`` (periods seen before) and ``signal`` (spike, drop,
    level_shift, silent or null) with ``direction`` (up/down) and ``score`` (how far outside normal).
    ``keep_season`` keeps the same-season model's ``season_median`` and ``season_scale`` too (with a
    ``season``); ``log_scale`` adds ``log_scale``, the robust spread of ln(value / expected) over the
    ``scale_window`` rows before (1.4826 x their median absolute value: one outlier does not inflate it), to
    judge ratios under multiplicative noise. Duplicate (keys, ts) rows are summed first. Rows at time t depend only on rows at or before t.
    """
    p = params or UsageParams()
    keys = list(key_cols)
    df = frame.select([*keys, pl.col(ts_col).alias("ts"), pl.col(value_col).cast(pl.Float64).alias("value")])
    if not _sorted_by(df, [*keys, "ts"]):  # the signal store already returns (customer, ts) order
        df = sort_series(df, keys)
    dup = df.select(
        pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in [*keys, "ts"]]).any()
    ).item()
    if dup:
        df = df.group_by([*keys, "ts"]).agg(pl.col("value").sum()).sort([*keys, "ts"])
    if p.fill_gaps:
        df = _fill_gaps(df, keys, "value", p.every, end)
    df = with_positions(df, keys)
    df = trailing_baseline(
        df,
        keys,
        "value",
        window=p.window,
        scale_window=p.scale_window,
        season=p.season,
        min_scale_rel=p.min_scale_rel,
    )
    # keep memory to the columns still needed (10M rows x 8 bytes = 80 MB per column)
    if not keep_season:
        df = df.drop([c for c in ("season_median", "season_scale") if c in df.columns])
    if log_scale:
        log_resid = pl.when((pl.col("value") > 0) & (pl.col("expected") > 0)).then(
            (pl.col("value") / pl.col("expected")).log().abs()
        )
        # rows before a series' scale_window-th are left out: their window would reach the previous series
        df = df.with_columns(
            log_scale=pl.when(pl.col("_pos") >= p.scale_window).then(
                1.4826
                * lag(log_resid, 1).rolling_median(p.scale_window, min_samples=(p.scale_window + 1) // 2)
            )
        )
    n = df.height
    idx = pl.Series("_idx", np.arange(n, dtype=np.int64))
    L = p.shift_window
    df = df.with_columns(idx).with_columns(
        z=(pl.col("value") - pl.col("expected")) / pl.col("scale"),
        recent_median=pl.when(pl.col("_pos") >= L - 1).then(pl.col("value").rolling_median(L, min_samples=L)),
        shift_base=lag("base_median", L - 1),
        shift_scale=lag("base_scale", L - 1),
        # index of the last non-zero row at or before this one (group start - 1 if none): zero runs
        _nz=pl.when(pl.col("value") != 0)
        .then(pl.col("_idx"))
        .when(pl.col("_start"))
        .then(pl.col("_idx") - 1)
        .forward_fill(),
    )
    first_zero = (pl.col("_nz") + 1).clip(0, max(n - 1, 0))
    df = df.with_columns(
        # no spread known yet (the baseline is warming up): no level shift either, rather than judging the
        # move against the bare floor (a 5% spread makes every ordinary month a "shift" on noisy usage)
        shift_z=pl.when(pl.col("shift_scale").is_not_null()).then(
            pl.col("recent_median") - pl.col("shift_base")
        )
        / pl.max_horizontal(
            pl.col("shift_scale"), pl.col("shift_base").abs() * p.min_scale_rel, pl.lit(1e-9)
        ),
        zero_run=pl.col("_idx") - pl.col("_nz"),
        # the baseline just before the zero run began (only rows inside a run have one: no peeking ahead)
        silent_base=pl.when(pl.col("_idx") > pl.col("_nz")).then(pl.col("base_median").gather(first_zero)),
    ).drop("_nz", "shift_scale", "_start", "base_scale")
    change = pl.col("value") - pl.col("expected")
    silent = (pl.col("zero_run") >= p.silent_periods) & (pl.col("silent_base") > 0)
    shifted = (pl.col("shift_z").abs() >= p.shift_z) & (
        (pl.col("recent_median") - pl.col("shift_base")).abs()
        >= p.shift_min_change * pl.col("shift_base").abs()
    )
    spike = (
        (pl.col("z") >= p.z_threshold)
        & (pl.col("value") >= p.min_ratio * pl.col("expected"))
        & (change >= p.min_abs_change)
    )
    drop = (
        (pl.col("z") <= -(p.drop_z_threshold if p.drop_additive_z is None else p.drop_additive_z))
        & (pl.col("value") <= p.max_drop_ratio * pl.col("expected"))
        & (-change >= p.min_abs_change)
    )
    signal = (
        pl.when(silent.fill_null(False))
        .then(pl.lit("silent"))
        .when(shifted.fill_null(False))
        .then(pl.lit("level_shift"))
        .when(spike.fill_null(False))
        .then(pl.lit("spike"))
        .when(drop.fill_null(False))
        .then(pl.lit("drop"))
    )
    df = df.with_columns(signal=signal)
    direction = (
        pl.when(pl.col("signal") == "silent")
        .then(pl.lit("down"))
        .when(pl.col("signal") == "level_shift")
        .then(pl.when(pl.col("shift_z") > 0).then(pl.lit("up")).otherwise(pl.lit("down")))
        .when(pl.col("signal").is_not_null())
        .then(pl.when(pl.col("z") > 0).then(pl.lit("up")).otherwise(pl.lit("down")))
    )
    score = (
        pl.when(pl.col("signal") == "silent")
        .then(pl.col("zero_run").cast(pl.Float64) / p.silent_periods * p.z_threshold)
        .when(pl.col("signal") == "level_shift")
        .then(pl.col("shift_z").abs())
        .otherwise(pl.col("z").abs())
    )
    df = df.with_columns(direction=direction, score=score).rename({"_pos": "history"}).drop("_idx")
    return _hold_drops(df, p)


def _hold_drops(df: pl.DataFrame, p: UsageParams) -> pl.DataFrame:
    """A drop or silence held as one episode until usage recovers (``held``), and the periods after it.

    An episode starts at a ``drop`` or ``silent`` row outside any episode; its reference is the usual level
    then (``expected``, or ``silent_base`` for silence), from rows before the drop. Each later row whose value
    stays under ``recover_ratio`` x the reference, up to ``hold_periods`` after the start, is held: a ``drop``
    (``silent`` stays ``silent``) judged against the reference and the spread of the start, whatever the
    trailing baseline, which absorbs the drop, says. For the ``_baseline_reach`` rows after an episode
    (``after_drop``), until the baseline has forgotten it, a rise is a spike or level shift only against the
    level before the drop, and a level shift down is the drop just ended: coming back is not news.
    Sequential over episodes only (few), not rows.
    """
    n = df.height
    held = np.zeros(n, dtype=bool)
    after = np.zeros(n, dtype=bool)
    since_end = np.zeros(n, dtype=np.int64)  # periods since the episode ended (in its after-period)
    ref = np.full(n, np.nan)
    ref_scale = np.full(n, np.nan)
    sig = df["signal"]
    starts = ((sig == "drop") | (sig == "silent")).fill_null(False).to_numpy()
    if p.hold_periods > 0 and starts.any():
        value = df["value"].to_numpy()
        level = (
            df.select(pl.when(pl.col("signal") == "silent").then("silent_base").otherwise("expected"))
            .to_series()
            .to_numpy()
        )
        scale = df["scale"].to_numpy()
        pos = df["history"].to_numpy()
        # last row of each row's series: rows up to the next series start
        series_start = np.flatnonzero(pos == 0)
        bounds = np.append(series_start[1:], n) - 1
        last = bounds[np.searchsorted(series_start, np.arange(n), side="right") - 1]
        reach = _baseline_reach(p)
        free = 0  # rows before this are inside an episode (or its after-period) already judged
        for s in np.flatnonzero(starts):
            if s < free or not level[s] > 0:
                continue
            stop = min(int(last[s]), s + p.hold_periods)
            back = np.flatnonzero(value[s + 1 : stop + 1] >= p.recover_ratio * level[s])
            end = s + 1 + (int(back[0]) if back.size else stop - s)  # first row not held
            held[s + 1 : end] = True
            tail = min(int(last[s]) + 1, end + reach)
            after[end:tail] = True
            since_end[end:tail] = np.arange(tail - end)
            ref[s + 1 : tail] = level[s]
            ref_scale[s + 1 : end] = scale[s]
            free = end
    df = df.with_columns(
        pl.Series("held", held),
        pl.Series("after_drop", after),
        pl.Series("_ref", ref, nan_to_null=True),
        pl.Series("_since_end", since_end),
    )
    if not held.any() and not after.any():
        return df.drop("_ref", "_since_end")
    ref_c, value_c = pl.col("_ref"), pl.col("value")
    held_z = (value_c - ref_c) / pl.Series("_s", ref_scale, nan_to_null=True)
    # a rise right after a drop: news only if it is one against the level before the drop
    rise_ok = (
        pl.when(pl.col("signal") == "spike")
        .then(value_c >= p.min_ratio * ref_c)
        .when((pl.col("signal") == "level_shift") & (pl.col("direction") == "up"))
        .then(pl.col("recent_median") - ref_c >= p.shift_min_change * ref_c)
        # a "shift down" whose recent median still spans the drop just ended is that drop, over
        .when((pl.col("signal") == "level_shift") & (pl.col("direction") == "down"))
        .then(pl.col("_since_end") >= p.shift_window)
        .otherwise(pl.lit(True))
    )
    keep_signal = pl.col("after_drop").not_() | rise_ok
    silent = pl.col("signal") == "silent"
    return df.with_columns(
        signal=pl.when(pl.col("held") & silent.not_().fill_null(True))
        .then(pl.lit("drop"))
        .when(keep_signal)
        .then(pl.col("signal")),
        direction=pl.when(pl.col("held")).then(pl.lit("down")).when(keep_signal).then(pl.col("direction")),
        expected=pl.when(pl.col("held") & silent.not_().fill_null(True)).then(ref_c).otherwise("expected"),
        scale=pl.when(pl.col("held") & silent.not_().fill_null(True))
        .then(pl.Series(ref_scale, nan_to_null=True))
        .otherwise("scale"),
        z=pl.when(pl.col("held") & silent.not_().fill_null(True)).then(held_z).otherwise("z"),
        score=pl.when(pl.col("held") & silent.not_().fill_null(True)).then(held_z.abs()).otherwise("score"),
    ).drop("_ref", "_since_end")


def detect_series(
    frame: pl.DataFrame,
    key_cols: Sequence[str],
    value_col: str,
    as_of: datetime,
    params: UsageParams | None = None,
    *,
    ts_col: str = "ts",
) -> pl.DataFrame:
    """The series of ``frame`` whose latest row at or before ``as_of`` fires (see :func:`score_series`).

    For outage detection on service health: ``detect_series(metrics.filter(pl.col("metric") == "error_rate"),
    ["service_id", "region", "metric"], "value", as_of, UsageParams(every="5m", season=None))`` and keep
    ``direction == "up"`` (for ``requests`` keep ``"down"``).
    """
    known = point_in_time(frame, as_of, ts_col)
    scored = score_series(known, key_cols, value_col, params, ts_col=ts_col)
    return latest_rows(scored, list(key_cols)).filter(pl.col("signal").is_not_null())


def _fmt(expr: pl.Expr) -> pl.Expr:
    """A number for people: one decimal under 100, whole numbers above."""
    return (
        pl.when(expr.abs() >= 100)
        .then(expr.round(0).cast(pl.Int64).cast(pl.String))
        .otherwise(expr.round(1).cast(pl.String))
    )


class UsageTripWire:
    """Usage spikes, drops, level shifts and silence against each customer's own baseline."""

    name: ClassVar[str] = "usage"
    kinds: ClassVar[tuple[str, ...]] = ("usage",)
    Params: ClassVar[type[UsageParams]] = UsageParams

    def __init__(self, **overrides: Any) -> None:
        self.params = params_with(UsageParams, "usage", overrides)

    def history(self) -> dict[str, timedelta | None]:
        """The trailing ``tail_periods`` (+ one period of slack for data that lags ``as_of``) a latest score
        depends on; everything when periods are not of fixed length or gaps are not filled.

        A series in a zero run, cut off by the window, or absent from it is :meth:`backfill`'s business.

        >>> UsageTripWire().history()["usage"].days
        135
        """
        step = _fixed_step(self.params.every)
        if not self.params.fill_gaps or step is None:
            return {"usage": None}
        return {"usage": timedelta(microseconds=step * (tail_periods(self.params) + 2))}

    def backfill(
        self,
        frames: Mapping[str, pl.DataFrame],
        as_of: datetime,
        since: Mapping[str, datetime | None],
        **context: Any,
    ) -> dict[str, list[str]]:
        """Customers whose whole usage history a latest score may depend on beyond the window read from
        ``since["usage"]``: a series with fewer than ``tail_periods`` periods in it (young, or older rows cut
        off), one in a zero run at the latest time (the run's start and the baseline before it may be older),
        and a known customer (``customers``) with no usage in it (silent since before it, or none ever).

        Where the window is exact: the latest row of a series depends on at most ``tail_periods`` earlier
        periods except through a zero run, and the history count in findings is capped there (see
        ``_latest_scores``). Not covered: a customer's one metric that stopped before the window while others
        go on (its series is missing from the read), an unknown customer silent since before the window (its
        finding is not written anyway), and a unit / period first named only before the window.
        """
        start, usage = since.get("usage"), frames.get("usage")
        if start is None or usage is None:
            return {}
        step = _fixed_step(self.params.every)
        customers = context.get("customers")
        id_col = next(
            (c for c in ("customer_id", "id") if customers is not None and c in customers.columns), None
        )
        known = customers[id_col].cast(pl.String) if id_col else pl.Series("customer_id", [], pl.String)
        values = point_in_time(usage, as_of)
        if step is None or values.height == 0:
            return {"usage": known.to_list()}
        end = values["ts"].max()
        first_needed = end - timedelta(microseconds=step * tail_periods(self.params))
        series = values.group_by("customer_id", "metric").agg(
            first=pl.col("ts").min(),
            last=pl.col("ts").max(),
            last_value=pl.col("value").filter(pl.col("ts") == pl.col("ts").max()).fill_null(0.0).sum(),
        )
        partial = series.filter(
            (pl.col("first") > first_needed) | (pl.col("last") < end) | (pl.col("last_value") == 0)
        )["customer_id"]
        absent = known.filter(~known.is_in(series["customer_id"].implode()))
        return {"usage": pl.concat([partial, absent]).unique().sort().to_list()}

    def _prepare(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Series values, and the frame the per-series descriptors (unit, period) come from."""
        return frame.select("customer_id", "metric", "ts", "value"), frame

    @staticmethod
    def _describe(frame: pl.DataFrame, fired: pl.DataFrame) -> pl.DataFrame:
        """Unit and period of the series that fired (for the explanations), looked up for those only."""
        cols = frame.columns
        keys = ["customer_id", "metric"]
        return (
            frame.join(fired.select(keys).unique(), on=keys, how="semi")
            .group_by(keys)
            .agg(
                unit=pl.col("unit").drop_nulls().first() if "unit" in cols else pl.lit(None, pl.String),
                period=pl.col("period").drop_nulls().first() if "period" in cols else pl.lit(None, pl.String),
            )
        )

    def score_history(
        self, frames: Mapping[str, pl.DataFrame], *, runs: Sequence[datetime] | None = None, **context: Any
    ) -> pl.DataFrame:
        """Every (customer, time) the trip wire would fire at, in ``FINDINGS_SCHEMA`` (``ts`` = that time): it
        scores each data row as it arrives, so ``runs`` is not needed (see ``TripWire.score_history``)."""
        usage = frames.get("usage")
        if usage is None or usage.height == 0:
            return empty_findings()
        values, desc = self._prepare(usage)
        p = self.params
        scored = score_series(
            values, ["customer_id", "metric"], "value", p, keep_season=True, log_scale=p.relative_z
        )
        return self._findings(scored.filter(self._worth_telling()), desc)

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        usage = frames.get("usage")
        if usage is None or usage.height == 0:
            return empty_findings()
        values, desc = self._prepare(point_in_time(usage, as_of))
        if values.height == 0:
            return empty_findings()
        latest = self._latest_scores(values).filter(self._worth_telling())
        return self._findings(latest, desc).with_columns(ts=pl.lit(as_of).cast(pl.Datetime("us", "UTC")))

    def _worth_telling(self) -> pl.Expr:
        """Scored rows to tell the customer about: any core signal, with spikes and drops also unusual in
        log space (``relative_z``) and against the same-weekday level (``same_season_check``), and every held
        period of a drop (see ``_hold_drops``)."""
        p = self.params
        sig = pl.col("signal")
        value = pl.col("value")
        level = pl.col("expected")
        up, down = pl.lit(True), pl.lit(True)
        if p.season and p.same_season_check:
            med = pl.col("season_median")
            s_scale = pl.when(pl.col("season_scale").is_not_null() & (med > 0)).then(
                pl.max_horizontal(pl.col("season_scale"), med * p.min_scale_rel, pl.lit(1e-9))
            )
            s_z = (value - med) / s_scale
            # no same-weekday history yet (null): the flat model's verdict stands
            up = up & (value >= p.min_ratio * med).fill_null(True) & (s_z >= p.z_threshold).fill_null(True)
            down = down & (value <= p.max_drop_ratio * med).fill_null(True)
            down = down & (s_z <= -p.drop_z_threshold).fill_null(True)
            # the ratio below is to the same weekday's level where known
            level = pl.when(s_scale.is_not_null()).then(med).otherwise(level)
        if p.relative_z:
            # ln(ratio) in units of the robust spread of ln(value / usual); no opinion without a positive level
            spread = pl.max_horizontal(pl.col("log_scale"), pl.lit(p.min_scale_rel))
            rel_z = (value / level).log() / spread
            up = up & ((level <= 0) | (rel_z >= p.z_threshold)).fill_null(True)
            down = down & ((level <= 0) | (rel_z <= -p.drop_z_threshold)).fill_null(True)
        # a held drop was worth telling when it began, and stays so until usage recovers
        held = pl.col("held") & sig.is_not_null()
        return (
            pl.when(held)
            .then(True)
            .when(sig == "spike")
            .then(up)
            .when(sig == "drop")
            .then(down)
            .otherwise(sig.is_not_null())
        )

    def _latest_scores(self, values: pl.DataFrame) -> pl.DataFrame:
        """The scored latest row of every series, computing from the recent tail where that is exact.

        A latest row's core scores depend on at most ``_baseline_reach`` earlier periods, except through a
        zero run (its start may be older) and a held drop (its start and level may be up to ``hold_periods``
        older). So the tail is scored, and series that are young, gappy at the tail's start, in a zero run,
        held or just after a drop in the tail, rising (a rise just after an older drop is judged against the
        level before it), or that may be in an older drop are scored again from their whole history: the
        same result as scoring everything. "May be in an older drop": every period since a held drop began
        is under ``recover_ratio`` x its reference, a median of values the series had, so under that
        fraction of the series' second largest value (a level is a median: one spike does not make it).
        """
        p = self.params
        keys = ["customer_id", "metric"]
        step = _fixed_step(p.every)
        k = _baseline_reach(p)

        def score_all(frame: pl.DataFrame, end: datetime | None = None) -> pl.DataFrame:
            return score_series(frame, keys, "value", p, end=end, keep_season=True, log_scale=p.relative_z)

        if not p.fill_gaps or step is None:
            return latest_rows(score_all(values), keys)
        end = values["ts"].max()
        m = RECENT_PERIODS
        tail = values.filter(pl.col("ts") > end - timedelta(microseconds=step * (k + m + 1)))
        if tail.height > 0.7 * values.height:  # little to save
            return latest_rows(score_all(values), keys)
        scored = latest_rows(score_all(tail, end), keys)
        rising = (pl.col("direction") == "up").fill_null(False)
        exact = (pl.col("history") == k + m) & (pl.col("zero_run") == 0)
        exact = exact & pl.col("held").not_() & pl.col("after_drop").not_() & rising.not_()
        good = scored.filter(exact)
        if p.hold_periods > 0:
            # the last m periods' core scores are exact in the tail, so a drop that began in them is judged
            # as in the whole history; one held since before them left all of them under recover_ratio x
            # its level
            since = pl.col("ts") > end - timedelta(microseconds=step * m)
            maybe_held = (
                values.group_by(keys)
                .agg(
                    # a level is a median of 21 values or the middle of 4 same-season ones: at most the
                    # series' second largest value (one odd spike does not lift the bound)
                    top=pl.col("value").top_k(2).min(),
                    recent=pl.col("value").filter(since).max(),
                    n_recent=since.sum(),
                )
                .filter((pl.col("n_recent") < m) | (pl.col("recent") < p.recover_ratio * pl.col("top")))
            )
            good = good.join(maybe_held.select(keys), on=keys, how="anti")
        redo = values.select(keys).unique().join(good.select(keys), on=keys, how="anti")
        if redo.height == 0:
            return good
        again = score_all(values.join(redo, on=keys, how="semi"), end)
        return pl.concat([good, latest_rows(again, keys).select(good.columns)]).sort(keys)

    def _findings(self, fired: pl.DataFrame, desc: pl.DataFrame) -> pl.DataFrame:
        if fired.height == 0:
            return empty_findings()
        p = self.params
        desc = self._describe(desc, fired)
        need = p.window + p.scale_window
        cap = _baseline_reach(p) + RECENT_PERIODS
        # history counts in findings are capped where the baseline stops looking back (live == backtest)
        fired = fired.with_columns(history=pl.col("history").clip(upper_bound=cap))
        df = fired.join(desc, on=["customer_id", "metric"], how="left").with_columns(
            unit=pl.coalesce(
                pl.col("unit"),
                pl.col("metric").replace_strict(METRIC_UNIT, default=None, return_dtype=pl.String),
            ).fill_null(""),
            period=pl.col("period").fill_null("day"),
            # rows are stamped at the END of the period they cover (the signal convention): name that period
            covers=pl.col("ts")
            - pl.when(pl.col("period").fill_null("day") == "hour")
            .then(pl.duration(hours=1))
            .when(pl.col("period").fill_null("day") == "week")
            .then(pl.duration(weeks=1))
            .otherwise(pl.duration(days=1)),
            label=pl.col("metric").replace_strict(
                METRIC_LABEL, default=pl.col("metric").str.replace_all("_", " "), return_dtype=pl.String
            ),
        )
        unit = pl.when(pl.col("unit") == "").then(pl.lit("")).otherwise(pl.lit(" ") + pl.col("unit"))
        per = pl.col("period").replace_strict(PERIOD_WORD, default="a period", return_dtype=pl.String)
        when = (
            pl.when(pl.col("period") == "hour")
            .then(pl.col("covers").dt.strftime("%Y-%m-%d %H:00 UTC"))
            .otherwise(pl.col("covers").dt.strftime("%Y-%m-%d"))
        )
        ratio = pl.col("value") / pl.col("expected")
        n_periods = pl.col("period").replace_strict(
            {"hour": "hours", "day": "days", "week": "weeks", "month": "months"}, default="periods"
        )
        text = (
            pl.when(pl.col("signal") == "spike")
            .then(
                pl.format(
                    "Your {} on {} was {}{}, about {}x your usual {}{} {}.",
                    "label",
                    when,
                    _fmt(pl.col("value")),
                    unit,
                    _fmt(ratio),
                    _fmt(pl.col("expected")),
                    unit,
                    per,
                )
            )
            .when(pl.col("signal") == "drop")
            .then(
                pl.format(
                    "Your {} on {} was {}{}, well below your usual {}{} {}.",
                    "label",
                    when,
                    _fmt(pl.col("value")),
                    unit,
                    _fmt(pl.col("expected")),
                    unit,
                    per,
                )
            )
            .when(pl.col("signal") == "level_shift")
            .then(
                pl.format(
                    "Your {} has been about {}{} {} for the last {} {}, {} from your usual {}{}.",
                    "label",
                    _fmt(pl.col("recent_median")),
                    unit,
                    per,
                    pl.lit(p.shift_window),
                    n_periods,
                    pl.when(pl.col("direction") == "up").then(pl.lit("up")).otherwise(pl.lit("down")),
                    _fmt(pl.col("shift_base")),
                    unit,
                )
            )
            .otherwise(
                pl.format(
                    "We have seen no {} from you for {} {}; you usually use about {}{} {}.",
                    "label",
                    pl.col("zero_run"),
                    n_periods,
                    _fmt(pl.col("silent_base")),
                    unit,
                    per,
                )
            )
        )
        evidence = pl.struct(
            metric=pl.col("metric"),
            value=pl.col("value"),
            expected=pl.col("expected").round(4),
            scale=pl.col("scale").round(4),
            z=pl.col("z").round(3),
            ratio=ratio.round(3),
            seasonal=pl.col("seasonal"),
            recent_median=pl.col("recent_median").round(4),
            shift_base=pl.col("shift_base").round(4),
            shift_z=pl.col("shift_z").round(3),
            zero_run=pl.col("zero_run"),
            silent_base=pl.col("silent_base").round(4),
            history=pl.col("history"),
            direction=pl.col("direction"),
        ).struct.json_encode()
        severity = (
            pl.when((pl.col("signal") == "silent") | ((pl.col("signal") == "spike") & (ratio >= 3)))
            .then(pl.lit("warning"))
            .otherwise(pl.lit("info"))
        )
        out = df.with_columns(
            kind=pl.lit(self.name),
            condition=pl.format("usage:{}:{}", "signal", "metric"),
            confidence=(0.5 + 0.5 * ((pl.col("history") - need) / max(cap - need, 1))).clip(0.5, 1.0),
            severity=severity,
            topic=pl.lit("usage"),
            explanation=text,
            evidence=evidence,
            score=pl.col("score").clip(0, 1e6),
        )
        return as_findings(out)


def parse_evidence(findings: pl.DataFrame) -> list[dict[str, Any]]:
    """The evidence JSON of each finding as dicts (for tests and reports)."""
    return [json.loads(e) for e in findings["evidence"]]
