"""History scoring for trip wires whose findings only change when a customer's data does.

``detect`` at one run depends on the rows up to that run; for many trip wires a customer's findings stay the
same from one run to the next unless one of their rows arrives (or ages out of a window). Such a wire names,
per customer, the runs at which their findings may change (:func:`change_runs`); :func:`carry_forward` calls
``detect`` at those runs for just those customers and repeats each result until that customer's next change.
The result equals ``detect`` at every run, with ``ts`` set to each run.

>>> from datetime import UTC, datetime, timedelta
>>> runs = [datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(days=d) for d in range(4)]
>>> changes = pl.DataFrame({"customer_id": ["a", "a"], "i": [0, 2]})
>>> row = dict.fromkeys(FINDINGS_SCHEMA)
>>> def detect_at(customers, as_of):  # "a" is flagged while the run is before Jan 3
...     hit = pl.DataFrame([{**row, "customer_id": "a", "ts": as_of}], schema=FINDINGS_SCHEMA)
...     return hit if as_of.day < 3 else empty_findings()
>>> carry_forward(changes, runs, detect_at)["ts"].dt.day().to_list()
[1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day

import numpy as np
import polars as pl

from forewarn.detect.base import FINDINGS_SCHEMA, as_findings, empty_findings
from forewarn.timeutil import utc

TS = pl.Datetime("us", "UTC")


def daily_runs(
    frames: Mapping[str, pl.DataFrame], kinds: Sequence[str], run_at: time_of_day = time_of_day(9)
) -> list[datetime]:
    """One run a day at ``run_at`` UTC from the first to the last day with a row of ``kinds`` in ``frames``.

    >>> t = datetime(2026, 1, 1, 20, tzinfo=UTC)
    >>> frames = {"invoice": pl.DataFrame({"ts": [t, t + timedelta(days=2)]})}
    >>> [r.day for r in daily_runs(frames, ["invoice"])]
    [1, 2, 3]
    """
    spans = [frames[k]["ts"] for k in kinds if frames.get(k) is not None and frames[k].height]
    if not spans:
        return []
    lo = utc(min(s.min() for s in spans)).date()
    hi = utc(max(s.max() for s in spans)).date()
    return [datetime.combine(lo + timedelta(days=i), run_at, tzinfo=UTC) for i in range((hi - lo).days + 1)]


def run_micros(runs: Sequence[datetime]) -> np.ndarray:
    return pl.Series([utc(r) for r in runs], dtype=TS).cast(pl.Int64).to_numpy()


def change_runs(
    customer_id: pl.Series, ts: pl.Series, runs_us: np.ndarray, *, after: timedelta | None = None
) -> pl.DataFrame:
    """(customer_id, i): the first run index a row at ``ts`` is seen by (``ts <= run``), or, with ``after``,
    the first run at which it is more than ``after`` old (``run > ts + after``)."""
    us = ts.cast(TS).cast(pl.Int64).to_numpy()
    if after is None:
        i = np.searchsorted(runs_us, us, side="left")
    else:
        i = np.searchsorted(runs_us, us + int(after.total_seconds() * 1_000_000), side="right")
    return pl.DataFrame({"customer_id": customer_id, "i": i.astype(np.int64)})


def carry_forward(
    changes: pl.DataFrame,
    runs: Sequence[datetime],
    detect_at: Callable[[pl.Series, datetime], pl.DataFrame],
) -> pl.DataFrame:
    """``detect_at(customers, run)`` at each customer's change runs, each result repeated until the next one.

    ``changes`` has (customer_id, i) rows: customer ``customer_id``'s findings may differ from run ``i - 1``
    at run ``i`` (index into ``runs``); a customer must have a change at or before their first data.
    """
    n = len(runs)
    changes = changes.filter(pl.col("i") < n).unique().sort("customer_id", "i")
    if changes.height == 0:
        return empty_findings()
    parts = []
    for (i,), group in changes.group_by("i", maintain_order=False):
        found = detect_at(group["customer_id"], runs[int(i)])
        if found.height:
            parts.append(as_findings(found).with_columns(i=pl.lit(int(i), dtype=pl.Int64)))
    if not parts:
        return empty_findings()
    spans = changes.with_columns(end=pl.col("i").shift(-1).over("customer_id").fill_null(n))
    stamps = pl.DataFrame(
        {"run": np.arange(n, dtype=np.int64), "at": pl.Series([utc(r) for r in runs], dtype=TS)}
    )
    out = (
        pl.concat(parts)
        .join(spans, on=["customer_id", "i"])
        .with_columns(run=pl.int_ranges("i", "end", dtype=pl.Int64))
        .explode("run")
        .join(stamps, on="run")
        .with_columns(ts=pl.col("at"))
    )
    return out.select(list(FINDINGS_SCHEMA)).sort("ts", "customer_id", "condition")
