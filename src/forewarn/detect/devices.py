"""The devices trip wire: failure risk of a customer's device from SMART-style health counters.

Disks (and many other devices) count the damage they work around: reallocated sectors (SMART 5), reported
uncorrectable errors (187), command timeouts (188), sectors pending reallocation (197), offline uncorrectable
sectors (198); and they count their own power-on hours (SMART 9). Per device, at each reading and from readings
at or before it only, the trip wire computes a few warning signs (``FEATURES``):

- ``rule_any``: any of the five counters is above zero (the plain rule drive fleets use, as one input);
- ``media_level``, ``pending_level``, ``timeout_level``: how large the damage counters are (log scale);
  pending and offline-uncorrectable sectors (197/198) describe the medium *now*;
- ``media_rise``, ``timeout_rise``: how much they rose over the last ``lookback`` (from the reading at or before
  ``ts - lookback``, or the first reading when the device is younger);
- ``rise_days``: on how many readings within ``lookback`` a counter rose (a disk that keeps losing sectors,
  not one that remapped a few once);
- ``accelerating``: the rise in the recent half of ``lookback`` is larger than in the earlier half;
- ``new_damage``: the damage counters rose from zero within ``lookback`` (time since the first error is short);
- ``hours_stalled``: the share of the wall-clock time since the reading ``stall_window`` earlier in which the
  power-on hours did *not* advance (a disk that drops offline or hangs).

``risk = 1 / (1 + exp(-(intercept + sum_f coefficient_f * feature_f)))``: a logistic model with non-negative
coefficients (every sign can only raise the risk), fitted by :func:`fit_risk_model` (L2-regularised) on real
drives, judged at their last snapshot. The defaults were fitted on all drives of Backblaze's April 2013 daily
snapshots (``bench/devices_backblaze.py --fit``; its cross-validated figures, drives held out, are in the
README); the risk is the chance that a drive of that fleet fails on the day of the reading. A device fires
(condition ``device:<device_id>``) when ``risk >= min_risk``, and the explanation names the sign that
contributed most.

>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2026, 3, 1, tzinfo=UTC)
>>> sectors = [0, 0, 0, 0, 0, 0, 1, 3, 8, 20, 45, 90, 150, 240]  # one reading a day
>>> rows = [("c1", "D1", t0 + timedelta(days=d), "smart_5_raw", v) for d, v in enumerate(sectors)]
>>> tel = pl.DataFrame(rows, schema=["customer_id", "device_id", "ts", "attribute", "value"], orient="row")
>>> out = DeviceTripWire().detect({"telemetry": tel}, t0 + timedelta(days=13))
>>> out.select("condition", "severity", pl.col("score").round(3)).row(0)
('device:D1', 'warning', 0.139)
>>> print(out["explanation"][0])
Your device D1 is showing early signs of failure: its reallocated sectors rose from 0 to 240 in the last 14 days. Please back up your data; we can help replace it.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.optimize import minimize

from forewarn.detect.base import Params, as_findings, empty_findings, params_with, point_in_time

ATTRIBUTE_LABEL = {
    "smart_5_raw": "reallocated sectors",
    "smart_187_raw": "uncorrectable errors",
    "smart_188_raw": "command timeouts",
    "smart_197_raw": "pending sectors",
    "smart_198_raw": "offline uncorrectable sectors",
    "command_timeouts": "command timeouts",
}
MEDIA = ("smart_5_raw", "smart_187_raw", "smart_197_raw", "smart_198_raw")  # damage to the medium
PENDING = ("smart_197_raw", "smart_198_raw")  # current-state counters: non-zero is itself a warning
TIMEOUTS = ("smart_188_raw", "command_timeouts")  # also caused by cables and controllers
COUNTERS = MEDIA + TIMEOUTS
HOURS = "smart_9_raw"  # power-on hours
WATCHED = (*COUNTERS, HOURS)
FEATURES = (
    "rule_any",
    "media_level",
    "pending_level",
    "timeout_level",
    "media_rise",
    "timeout_rise",
    "rise_days",
    "accelerating",
    "new_damage",
    "hours_stalled",
)
RISE_FEATURES = ("media_rise", "timeout_rise", "rise_days", "accelerating", "new_damage")

# Fitted by ``bench/devices_backblaze.py --fit`` on every drive of the April 2013 Backblaze snapshots
# (21,959 drives, 43 failures, each judged at its last snapshot; l2 chosen by cross-validation by drive).
FITTED_INTERCEPT = -7.0362
FITTED_COEFFICIENTS: dict[str, float] = {
    "rule_any": 0.2996,
    "media_level": 0.1278,
    "pending_level": 0.0912,
    "timeout_level": 0.0,  # April 2013 reports no SMART 188: no evidence either way
    "media_rise": 0.2739,
    "timeout_rise": 0.0,
    "rise_days": 0.0379,
    "accelerating": 0.9959,
    "new_damage": 1.4126,
    "hours_stalled": 5.8092,
}


@dataclass(frozen=True)
class DeviceParams(Params):
    """Parameters of the devices trip wire: the fitted risk model and when a risk is worth a message."""

    intercept: float = FITTED_INTERCEPT
    coefficients: Mapping[str, float] = field(default_factory=lambda: dict(FITTED_COEFFICIENTS))
    lookback: timedelta = timedelta(days=14)  # "rising" means within this window
    stall_window: timedelta = timedelta(days=1)  # power-on hours are compared with the reading this far back
    # fire from a 1-in-20 chance that the device fails on the day of the reading (a probability fixed up
    # front, not tuned: in-sample on April 2013 it flags 0.26% of working drives and 49% of failing ones)
    min_risk: float = 0.05
    critical_risk: float = 0.2  # severity critical from a 1-in-5 chance on
    max_staleness: timedelta = timedelta(days=7)  # devices not heard from for longer are not judged at as_of
    # live detection reads this far before the judged window: readings further apart do not compare
    reading_horizon: timedelta = timedelta(days=30)


def _asof(left: pl.DataFrame, right: pl.DataFrame, at: str, suffix: str) -> pl.DataFrame:
    """``left`` with ``right``'s columns (renamed ``<col><suffix>``) from the device's reading at or before
    ``left[at]``."""
    cols = [c for c in right.columns if c != "device_id"]
    r = right.select("device_id", *[pl.col(c).alias(c + suffix) for c in cols]).sort("ts" + suffix)
    return (
        left.sort(at)
        .join_asof(
            r, left_on=at, right_on="ts" + suffix, by="device_id", strategy="backward", check_sortedness=False
        )
        .drop(at)
    )


def device_features(telemetry: pl.DataFrame, params: DeviceParams | None = None) -> pl.DataFrame:
    """One row per (customer, device, reading time) with every name in ``FEATURES`` and, per damage counter,
    its value, the value ``lookback`` before and the rise (columns ``<counter>``, ``<counter>_back``, ``<counter>_half``). Each row uses only readings at or
    before its time; a NaN or infinite reading is a broken reading, not a counter value: it is ignored.

    >>> from datetime import UTC, datetime
    >>> t = [datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2, 3)]
    >>> tel = pl.DataFrame({"customer_id": "c", "device_id": "D", "ts": t * 2,
    ...     "attribute": ["smart_197_raw"] * 3 + ["smart_9_raw"] * 3, "value": [0.0, 2, 5, 100, 124, 124]})
    >>> device_features(tel).select("pending_level", "rise_days", "new_damage", "hours_stalled").rows()[-1]
    (1.791759469228055, 2, 1.0, 1.0)
    """
    p = params or DeviceParams()
    tel = (
        telemetry.filter(pl.col("attribute").is_in(WATCHED))
        .select("customer_id", "device_id", "attribute", "ts", pl.col("value").cast(pl.Float64))
        .filter(pl.col("value").is_finite())
    )
    if tel.height == 0:
        return pl.DataFrame()
    wide = tel.pivot(
        on="attribute", index=["customer_id", "device_id", "ts"], values="value", aggregate_function="last"
    )
    wide = wide.with_columns(pl.lit(None, pl.Float64).alias(a) for a in WATCHED if a not in wide.columns)
    # a counter not reported at a reading keeps its last known value (from earlier readings only)
    wide = wide.sort("device_id", "ts").with_columns(pl.col(*COUNTERS).forward_fill().over("device_id"))
    if "model" in telemetry.columns:  # the model as known at each reading (point-in-time, like the rest)
        models = (
            telemetry.filter(pl.col("model").is_not_null())
            .group_by("device_id", "ts")
            .agg(pl.col("model").last())
            .sort("ts")
        )
        wide = wide.sort("ts").join_asof(
            models, on="ts", by="device_id", strategy="backward", check_sortedness=False
        )
    else:
        wide = wide.with_columns(model=pl.lit(None, pl.String))

    def total(cols: Sequence[str], suffix: str = "") -> pl.Expr:
        return pl.sum_horizontal(pl.col(c + suffix).fill_null(0).clip(lower_bound=0) for c in cols)

    counters = wide.select("device_id", "ts", *COUNTERS)
    hours = wide.filter(pl.col(HOURS).is_not_null()).select("device_id", "ts", HOURS)
    first = counters.group_by("device_id").agg(pl.all().exclude("ts").first().name.suffix("_first"))
    df = wide.with_columns(
        t_back=pl.col("ts") - p.lookback,
        t_half=pl.col("ts") - p.lookback / 2,
        t_stall=pl.col("ts") - p.stall_window,
    )
    df = _asof(df, counters, "t_back", "_back")
    df = _asof(df, counters, "t_half", "_half")
    df = _asof(df, hours, "t_stall", "_stall").join(first, on="device_id", how="left")
    for c in COUNTERS:  # a device younger than lookback compares with its first reading
        df = df.with_columns(
            pl.coalesce(c + "_back", c + "_first").alias(c + "_back"),
            pl.coalesce(c + "_half", c + "_first").alias(c + "_half"),
        )
    damage = total(COUNTERS)
    df = df.sort("device_id", "ts").with_columns(
        rose=(damage > damage.shift(1).over("device_id")).fill_null(False).cast(pl.Int32),
        media=total(MEDIA),
        media_back=total(MEDIA, "_back"),
        timeouts=total(TIMEOUTS),
        timeouts_back=total(TIMEOUTS, "_back"),
        recent=(damage - total(COUNTERS, "_half")).clip(lower_bound=0),
        earlier=(total(COUNTERS, "_half") - total(COUNTERS, "_back")).clip(lower_bound=0),
        wall_hours=(pl.col("ts") - pl.col("ts_stall")).dt.total_seconds() / 3600.0,
        powered_hours=pl.col(HOURS) - pl.col(HOURS + "_stall"),
    )
    # hours going backwards (a reset, a garbled reading) say nothing: unknown, so no warning
    stalled = (1.0 - pl.col("powered_hours") / pl.col("wall_hours")).clip(0.0, 1.0)
    ok_hours = (pl.col("powered_hours") >= 0) & (pl.col("wall_hours") <= p.lookback.total_seconds() / 3600)
    df = df.with_columns(
        rule_any=(damage > 0).cast(pl.Float64),
        media_level=pl.col("media").log1p(),
        pending_level=total(PENDING).log1p(),
        timeout_level=pl.col("timeouts").log1p(),
        media_rise=(pl.col("media") - pl.col("media_back")).clip(lower_bound=0).log1p(),
        timeout_rise=(pl.col("timeouts") - pl.col("timeouts_back")).clip(lower_bound=0).log1p(),
        rise_days=pl.col("rose").rolling_sum_by("ts", window_size=p.lookback).over("device_id"),
        accelerating=((pl.col("recent") > pl.col("earlier")) & (pl.col("earlier") > 0)).cast(pl.Float64),
        new_damage=((pl.col("media_back") == 0) & (pl.col("media") > 0)).cast(pl.Float64),
        hours_stalled=pl.when(ok_hours).then(stalled).otherwise(0.0).fill_null(0.0),
    )
    per_counter = [pl.col(c + sfx) for c in COUNTERS for sfx in ("", "_back", "_half")]
    return df.select(
        "customer_id",
        "device_id",
        "ts",
        "model",
        *FEATURES,
        *per_counter,
        hours_powered=pl.col("powered_hours"),
        wall_hours=pl.col("wall_hours"),
    ).sort("customer_id", "device_id", "ts")


def counters_expr() -> pl.Expr:
    """Per damage counter a device reports: its value, the value ``lookback`` before, the rise and whether it
    accelerated, from the columns :func:`device_features` returns (built only for rows that fire: costly)."""
    counter = [
        pl.struct(
            attribute=pl.lit(c),
            value=pl.col(c),
            before=pl.col(c + "_back"),
            delta=(pl.col(c) - pl.col(c + "_back")).clip(lower_bound=0),
            accelerating=(pl.col(c) - pl.col(c + "_half") > pl.col(c + "_half") - pl.col(c + "_back"))
            & (pl.col(c + "_half") > pl.col(c + "_back")),
        )
        for c in sorted(COUNTERS)
    ]
    return pl.concat_list(counter).list.filter(pl.element().struct.field("value").is_not_null())


def fit_risk_model(
    features: pl.DataFrame, failed: Sequence[bool] | pl.Series, *, l2: float = 1.0
) -> tuple[float, dict[str, float]]:
    """Intercept and non-negative coefficients of the logistic risk model on ``features`` (columns
    ``FEATURES``) and labels ``failed``, with an L2 penalty ``l2`` on the standardised coefficients.

    >>> f = pl.DataFrame({n: [0.0] * 8 for n in FEATURES}).with_columns(rule_any=pl.Series([0.0] * 6 + [1, 1]))
    >>> b, w = fit_risk_model(f, [False] * 5 + [True, True, True], l2=0.1)
    >>> w["rule_any"] > 0 and w["media_level"] == 0
    True
    """
    x = features.select(FEATURES).to_numpy().astype(np.float64)
    y = np.asarray(failed, dtype=np.float64)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd == 0] = 1.0
    z = (x - mu) / sd

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        eta = w[0] + z @ w[1:]
        prob = 1.0 / (1.0 + np.exp(-eta))
        nll = float(np.sum(np.logaddexp(0.0, eta) - y * eta)) + 0.5 * l2 * float(w[1:] @ w[1:])
        resid = prob - y
        return nll, np.concatenate([[resid.sum()], z.T @ resid + l2 * w[1:]])

    start = np.zeros(len(FEATURES) + 1)
    start[0] = np.log((y.mean() + 1e-9) / (1 - y.mean() + 1e-9))
    bounds = [(None, None)] + [(0.0, None)] * len(FEATURES)  # every warning sign can only raise the risk
    res = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    coef = res.x[1:] / sd
    intercept = float(res.x[0] - np.sum(res.x[1:] * mu / sd))
    return intercept, {n: float(c) for n, c in zip(FEATURES, coef, strict=True)}


class DeviceTripWire:
    """Per-device failure risk from damage counters (level, rise, acceleration) and stalled power-on hours."""

    name: ClassVar[str] = "devices"
    kinds: ClassVar[tuple[str, ...]] = ("telemetry",)
    Params: ClassVar[type[DeviceParams]] = DeviceParams

    def __init__(self, **overrides: Any) -> None:
        self.params = params_with(DeviceParams, "devices", overrides)
        unknown = set(self.params.coefficients) - set(FEATURES)
        if unknown:
            raise ValueError(
                f"devices trip wire: unknown coefficient(s) {sorted(unknown)}; expected {FEATURES}"
            )

    def risk_expr(self) -> pl.Expr:
        """The risk of a row of :func:`device_features`."""
        p = self.params
        eta = pl.lit(p.intercept) + pl.sum_horizontal(
            pl.col(f) * p.coefficients.get(f, 0.0) for f in FEATURES
        )
        return 1.0 / (1.0 + (-eta).exp())

    def risk_history(self, telemetry: pl.DataFrame, *, latest_only: bool = False) -> pl.DataFrame:
        """:func:`device_features` with ``risk``, ``fires``, ``rising`` and the reason that contributed most
        (``reason``), one row per (customer, device, reading time); ``latest_only``: each device's latest."""
        p = self.params
        df = device_features(telemetry, p)
        if df.height == 0:
            return df
        if latest_only:  # live detection judges each device at its latest reading only
            df = df.filter(pl.col("ts") == pl.col("ts").max().over("device_id"))
        contrib = {f: pl.col(f) * p.coefficients.get(f, 0.0) for f in FEATURES}
        rise = pl.sum_horizontal(contrib[f] for f in RISE_FEATURES)
        level = pl.sum_horizontal(
            contrib[f] for f in FEATURES if f not in RISE_FEATURES and f != "hours_stalled"
        )
        reason = (
            pl.when((contrib["hours_stalled"] > rise) & (contrib["hours_stalled"] > level))
            .then(pl.lit("stalled"))
            .when((rise > 0) & (rise >= level))
            .then(pl.lit("rising"))
            .otherwise(pl.lit("level"))
        )
        return df.with_columns(
            risk=self.risk_expr(),
            rising=(pl.col("media_rise") > 0) | (pl.col("timeout_rise") > 0),
            reason=reason,
        ).with_columns(fires=pl.col("risk") >= p.min_risk)

    def score_history(
        self, frames: Mapping[str, pl.DataFrame], *, runs: Sequence[datetime] | None = None, **context: Any
    ) -> pl.DataFrame:
        """Every (device, reading time) the trip wire would fire at, in ``FINDINGS_SCHEMA``: it scores each
        reading as it arrives, so ``runs`` is not needed (see ``TripWire.score_history``)."""
        tel = frames.get("telemetry")
        if tel is None or tel.height == 0:
            return empty_findings()
        tel = tel.filter(pl.col("device_id").is_in(self.may_fire(tel).implode()))
        hist = self.risk_history(tel)
        if hist.height == 0:
            return empty_findings()
        return self._findings(hist.filter(pl.col("fires")))

    def may_fire(self, telemetry: pl.DataFrame) -> pl.Series:
        """Device ids that can reach ``min_risk``: with a damage counter above zero at some reading, an unknown
        or non-finite reading, or power-on hours (which can stall). Every other device has all features 0, so
        the intercept's risk, and ``score_history`` skips it when that is below ``min_risk``.

        >>> from datetime import UTC, datetime
        >>> t = [datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2)]
        >>> tel = pl.DataFrame({"device_id": ["zero", "zero", "up", "up"], "ts": t + t,
        ...     "attribute": ["smart_5_raw"] * 4, "value": [0.0, 0.0, 0.0, 1.0]})
        >>> DeviceTripWire().may_fire(tel).to_list()
        ['up']
        """
        p = self.params
        ids = telemetry.get_column("device_id").unique().sort()
        if 1.0 / (1.0 + np.exp(-p.intercept)) >= p.min_risk:
            return ids
        value = pl.col("value").cast(pl.Float64)
        return (
            telemetry.filter(pl.col("attribute").is_in(WATCHED))
            .group_by("device_id", "attribute")
            .agg(
                (value.max() > 0)
                | (value.null_count() > 0)  # unknown readings, non-finite values: judged in full
                | (~value.is_finite()).any()
                | (pl.col("attribute").first() == HOURS)
            )
            .filter(pl.col("value"))
            .get_column("device_id")
            .unique()
            .sort()
        )

    def history(self) -> dict[str, timedelta | None]:
        """Telemetry since ``max_staleness + lookback + reading_horizon`` before ``as_of``: ``detect`` judges
        readings of the last ``max_staleness``, against readings up to ``lookback`` (+ ``reading_horizon``)
        earlier, and drops every older row itself.

        >>> DeviceTripWire().history()["telemetry"].days
        51
        """
        p = self.params
        return {"telemetry": p.max_staleness + p.lookback + p.reading_horizon}

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        tel = frames.get("telemetry")
        if tel is None or tel.height == 0:
            return empty_findings()
        recent = point_in_time(tel, as_of).filter(pl.col("ts") >= as_of - self.history()["telemetry"])
        hist = self.risk_history(recent, latest_only=True)
        if hist.height == 0:
            return empty_findings()
        latest = hist.filter((pl.col("ts") >= as_of - self.params.max_staleness) & pl.col("fires"))
        return self._findings(latest).with_columns(ts=pl.lit(as_of).cast(pl.Datetime("us", "UTC")))

    def _findings(self, fired: pl.DataFrame) -> pl.DataFrame:
        if fired.height == 0:
            return empty_findings()
        p = self.params
        days = max(1, round(p.lookback / timedelta(days=1)))
        # the counter to name: a rising one first (the largest rise), else the largest
        ranked = (
            fired.with_columns(counters=counters_expr())
            .with_columns(
                top=pl.col("counters")
                .list.eval(
                    pl.element().sort_by(
                        [pl.element().struct.field("delta"), pl.element().struct.field("value")],
                        descending=[True, True],
                    )
                )
                .list.first()
            )
            .unnest("top", separator="_")
        )
        label = pl.col("top_attribute").replace_strict(
            ATTRIBUTE_LABEL, default=pl.col("top_attribute"), return_dtype=pl.String
        )
        device = (
            pl.when(pl.col("model").is_not_null())
            .then(pl.format("{} ({})", "device_id", "model"))
            .otherwise(pl.col("device_id"))
        )
        num = pl.col("top_value").round(0).cast(pl.Int64).cast(pl.String)
        old = pl.col("top_before").round(0).cast(pl.Int64).cast(pl.String)
        what = (
            pl.when(pl.col("reason") == "stalled")
            .then(
                pl.format(
                    "it was powered on for only {} of the last {} hours, so it keeps dropping offline",
                    pl.col("hours_powered").round(0).cast(pl.Int64).cast(pl.String),
                    pl.col("wall_hours").round(0).cast(pl.Int64).cast(pl.String),
                )
            )
            .when(pl.col("top_delta") > 0)
            .then(pl.format("its {} rose from {} to {} in the last {} days", label, old, num, pl.lit(days)))
            .otherwise(pl.format("it reports {} {}", num, label))
        )
        text = pl.format(
            "Your device {} is showing early signs of failure: {}. "
            "Please back up your data; we can help replace it.",
            device,
            what,
        )
        evidence = pl.struct(
            device_id=pl.col("device_id"),
            model=pl.col("model"),
            risk=pl.col("risk").round(4),
            rising=pl.col("rising"),
            reason=pl.col("reason"),
            features=pl.struct(*[pl.col(f).round(4) for f in FEATURES]),
            counters=pl.col("counters"),
        ).struct.json_encode()
        out = ranked.with_columns(
            kind=pl.lit(self.name),
            condition=pl.format("device:{}", "device_id"),
            score=pl.col("risk"),
            confidence=pl.when(pl.col("rising")).then(0.8).otherwise(0.6),
            severity=pl.when(pl.col("risk") >= p.critical_risk)
            .then(pl.lit("critical"))
            .otherwise(pl.lit("warning")),
            topic=pl.lit("device"),
            explanation=text,
            evidence=evidence,
        )
        return as_findings(out)
