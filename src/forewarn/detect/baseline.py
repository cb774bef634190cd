"""Robust per-series baselines from trailing windows, in one vectorised Polars pass.

Every trip wire that asks "is this value unusual *for this customer*?" needs the same thing: for each
(series, time) the customer's usual level and spread computed only from the past. This module computes it for
all series at once without ``group_by``/``over`` (which costs a hash-partition of every row): the frame is
sorted by (key, time) once, rolling windows run over the flat columns, and rows whose window would reach into
the previous series are masked out by their position inside the series.
That keeps a 10M-row baseline at a few seconds.

The baseline at row t (computed from rows t-1, t-2, ... only, never t itself):

- ``base_median``: median of the last ``window`` values (the level);
- ``base_scale``: 1.2533 x mean absolute one-step residual ``|x - base_median|`` over the last
  ``scale_window`` rows (equal to sigma for normal noise, and never includes the current point);
- with ``season`` (e.g. 7 for daily data), ``season_median``: median of the values 1..4 seasons back (same
  weekday), and ``season_scale`` likewise; the seasonal model is used for a row when its residuals have been
  clearly smaller than the flat model's (``seasonal`` column), so weekday/weekend customers are judged against
  their own weekday.
- ``expected`` and ``scale``: the chosen model's level and spread, ``scale`` floored so that flat or tiny
  series do not produce huge z-scores.

>>> import polars as pl
>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> f = pl.DataFrame({"k": ["a"] * 60, "ts": [t0 + timedelta(days=i) for i in range(60)],
...                   "v": [10.0 + (i % 3) for i in range(60)]})
>>> b = trailing_baseline(sort_series(f, ["k"]), ["k"], "v", window=28, scale_window=14)
>>> b["expected"][59], b["expected"][10]
(11.0, None)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

SEASON_LAGS = 4  # how many past seasons the seasonal median looks at
MEAN_ABS_TO_SIGMA = 1.2533  # sqrt(pi/2): mean |x - mu| of a normal is sigma * sqrt(2/pi)
# rolling means over the flat column carry float error from rows of *other* series before them; rounding
# makes a series' baseline independent of what else is in the frame (so live == history, bit for bit)
DIGITS = 9


def sort_series(frame: pl.DataFrame, keys: Sequence[str], ts: str = "ts") -> pl.DataFrame:
    """``frame`` sorted by ``keys`` then ``ts`` (cheap when it already is)."""
    return frame.sort([*keys, ts])


def group_starts(frame: pl.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """Boolean array: True where a new series starts in a frame sorted by ``keys``."""
    n = frame.height
    if n == 0:
        return np.zeros(0, dtype=bool)
    changed = frame.select(
        pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys]).alias("s")
    )["s"].to_numpy()
    changed = changed.astype(bool, copy=True)
    changed[0] = True
    return changed


def positions(starts: np.ndarray) -> np.ndarray:
    """Position of each row inside its series (0 at the series' first row), from ``group_starts``."""
    n = starts.shape[0]
    idx = np.arange(n, dtype=np.int64)
    first = np.maximum.accumulate(np.where(starts, idx, 0))
    return idx - first


def with_positions(frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Adds ``_pos`` (row position inside its series) and ``_start`` (first row of a series)."""
    starts = group_starts(frame, keys)
    return frame.with_columns(
        pl.Series("_pos", positions(starts), dtype=pl.Int64), pl.Series("_start", starts, dtype=pl.Boolean)
    )


def lag(col: str | pl.Expr, n: int) -> pl.Expr:
    """The value ``n`` rows back in the same series (null when that is before the series starts)."""
    expr = pl.col(col) if isinstance(col, str) else col
    return pl.when(pl.col("_pos") >= n).then(expr.shift(n))


def _median4(exprs: list[pl.Expr]) -> pl.Expr:
    # median of four values = mean of the middle two = (sum - max - min) / 2
    return (pl.sum_horizontal(exprs) - pl.max_horizontal(exprs) - pl.min_horizontal(exprs)) / 2.0


def trailing_baseline(
    frame: pl.DataFrame,
    keys: Sequence[str],
    value: str,
    *,
    window: int = 28,
    scale_window: int = 14,
    season: int | None = None,
    season_gain: float = 0.7,
    min_scale_abs: float = 1e-9,
    min_scale_rel: float = 0.05,
) -> pl.DataFrame:
    """Adds the baseline columns described in the module docstring to ``frame`` (sorted by keys, ts).

    A row gets a baseline once its series has ``window + scale_window`` earlier rows (``window + season *
    SEASON_LAGS`` for the seasonal model); before that the columns are null, so detectors stay silent until
    they know the customer. ``min_scale_rel`` floors the spread at that fraction of the level.
    """
    if "_pos" not in frame.columns:
        frame = with_positions(frame, keys)
    x_lag = lag(value, 1)
    levels = {
        "base_median": pl.when(pl.col("_pos") >= window).then(
            x_lag.rolling_median(window, min_samples=window)
        )
    }
    if season:
        levels["season_median"] = _median4([lag(value, season * k) for k in range(1, SEASON_LAGS + 1)])
    frame = frame.with_columns(**levels)  # one context: Polars computes independent columns in parallel
    resid = (pl.col(value) - pl.col("base_median")).abs()
    exprs = {
        "base_scale": pl.when(pl.col("_pos") >= window + scale_window).then(
            (MEAN_ABS_TO_SIGMA * lag(resid, 1).rolling_mean(scale_window, min_samples=scale_window)).round(
                DIGITS
            )
        )
    }
    if season:
        s_resid = (pl.col(value) - pl.col("season_median")).abs()
        need = max(window, season * SEASON_LAGS) + scale_window
        exprs["season_scale"] = pl.when(pl.col("_pos") >= need).then(
            (MEAN_ABS_TO_SIGMA * lag(s_resid, 1).rolling_mean(scale_window, min_samples=scale_window)).round(
                DIGITS
            )
        )
    frame = frame.with_columns(**exprs)
    if season:
        seasonal = pl.col("season_scale").is_not_null() & (
            pl.col("season_scale") < season_gain * pl.col("base_scale")
        )
        frame = frame.with_columns(seasonal=seasonal.fill_null(False))
        level = pl.when(pl.col("seasonal")).then(pl.col("season_median")).otherwise(pl.col("base_median"))
        spread = pl.when(pl.col("seasonal")).then(pl.col("season_scale")).otherwise(pl.col("base_scale"))
    else:
        frame = frame.with_columns(seasonal=pl.lit(False))
        level, spread = pl.col("base_median"), pl.col("base_scale")
    return frame.with_columns(expected=level).with_columns(
        scale=pl.when(spread.is_not_null()).then(
            pl.max_horizontal(spread, pl.col("expected").abs() * min_scale_rel, pl.lit(min_scale_abs))
        )
    )


def robust_z(value: str = "value") -> pl.Expr:
    """(value - expected) / scale, null where there is no baseline yet."""
    return ((pl.col(value) - pl.col("expected")) / pl.col("scale")).alias("z")


def latest_rows(frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """The last row of each series in a frame sorted by (keys, ts)."""
    if frame.height == 0:
        return frame
    last = np.empty(frame.height, dtype=bool)
    starts = group_starts(frame, keys)
    last[:-1] = starts[1:]
    last[-1] = True
    return frame.filter(pl.Series(last))
