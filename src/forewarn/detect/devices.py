"""The devices trip wire: failure risk of a customer's device from SMART-style health counters.

Disks (and many other devices) count the damage they work around: reallocated sectors (SMART 5), reported
uncorrectable errors (187), command timeouts (188), sectors pending reallocation (197), offline uncorrectable
sectors (198). A counter that has always been 12 says little; a counter that starts rising, or rises faster, says
the device is degrading now. So per device and counter, from readings at or before each time:

- ``delta``: the rise over the last ``lookback`` (from the reading at or before ``ts - lookback``, or the first
  reading when the device is younger): rising from zero counts most;
- ``accelerating``: the rise in the recent half of ``lookback`` is larger than in the earlier half;
- ``level``: for counters that describe the *current* state of the medium (pending and offline-uncorrectable
  sectors, 197/198) a non-zero value is itself a warning sign.

``risk = 1 - exp(-sum_a w_a * (log1p(delta_a) + accel_bonus * accelerating_a + level_weight * log1p(level_a)))``,
in [0, 1). A device fires (condition ``device:<device_id>``) when ``risk >= min_risk``: e.g. reallocated
sectors appearing (0 -> 1 gives 0.5), but not a single extra command timeout (half weight: cables and
controllers cause them too).

>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2026, 3, 1, tzinfo=UTC)
>>> rows = [("c1", "D1", t0 + timedelta(days=d), "smart_5_raw", v) for d, v in enumerate([0, 0, 0, 8, 24])]
>>> tel = pl.DataFrame(rows, schema=["customer_id", "device_id", "ts", "attribute", "value"], orient="row")
>>> out = DeviceTripWire().detect({"telemetry": tel}, t0 + timedelta(days=4))
>>> out.select("condition", "severity").row(0)
('device:D1', 'critical')
>>> print(out["explanation"][0])
Your device D1 is showing early signs of failure: its reallocated sectors rose from 0 to 24 in the last 14 days. Please back up your data; we can help replace it.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import polars as pl

from forewarn.detect.base import Params, as_findings, empty_findings, params_with, point_in_time

ATTRIBUTE_LABEL = {
    "smart_5_raw": "reallocated sectors",
    "smart_187_raw": "uncorrectable errors",
    "smart_188_raw": "command timeouts",
    "smart_197_raw": "pending sectors",
    "smart_198_raw": "offline uncorrectable sectors",
    "command_timeouts": "command timeouts",
}


@dataclass(frozen=True)
class DeviceParams(Params):
    """Parameters of the devices trip wire (weights per counter: how strongly its rise predicts failure)."""

    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "smart_5_raw": 1.0,
            "smart_187_raw": 1.0,
            "smart_188_raw": 0.5,  # timeouts also come from cables and controllers
            "smart_197_raw": 1.0,
            "smart_198_raw": 1.0,
            "command_timeouts": 0.5,
        }
    )
    level_attributes: tuple[str, ...] = ("smart_197_raw", "smart_198_raw")  # current-state counters
    lookback: timedelta = timedelta(days=14)  # "rising" means within this window
    accel_bonus: float = 1.0
    level_weight: float = 0.5
    min_risk: float = 0.5  # fire on level alone when the risk reaches this
    critical_risk: float = 0.9  # severity critical from this risk on
    max_staleness: timedelta = timedelta(days=7)  # devices not heard from for longer are not judged at as_of
    # live detection reads this far before the judged window: readings further apart do not compare
    reading_horizon: timedelta = timedelta(days=30)


class DeviceTripWire:
    """Per-device failure risk from rising or accelerating health counters."""

    name: ClassVar[str] = "devices"
    kinds: ClassVar[tuple[str, ...]] = ("telemetry",)
    Params: ClassVar[type[DeviceParams]] = DeviceParams

    def __init__(self, **overrides: Any) -> None:
        self.params = params_with(DeviceParams, "devices", overrides)

    def risk_history(self, telemetry: pl.DataFrame, *, latest_only: bool = False) -> pl.DataFrame:
        """One row per (customer, device, reading time) with ``risk``, ``rising``, ``fires`` and the
        per-counter numbers in ``counters``. Each row uses only readings at or before its time."""
        p = self.params
        watched = list(p.weights)
        # a NaN or infinite reading is a broken reading, not a counter value: treat it as missing
        tel = (
            telemetry.filter(pl.col("attribute").is_in(watched))
            .select("customer_id", "device_id", "attribute", "ts", pl.col("value").cast(pl.Float64))
            .filter(pl.col("value").is_finite())
        )
        if "model" in telemetry.columns:  # the model as known at each reading (point-in-time, like the rest)
            models = (
                telemetry.filter(pl.col("model").is_not_null())
                .group_by("device_id", "ts")
                .agg(pl.col("model").last())
                .sort("ts")
            )
        else:
            models = pl.DataFrame(
                schema={"device_id": pl.String, "ts": pl.Datetime("us", "UTC"), "model": pl.String}
            )
        if tel.height == 0:
            return pl.DataFrame()
        keys = ["device_id", "attribute"]  # a device id names one device (its owner is carried along)
        tel = tel.sort("ts")
        first = tel.group_by(keys).agg(first_value=pl.col("value").first())
        right = tel.select(*keys, pl.col("ts").alias("ts_r"), pl.col("value").alias("v_r"))
        half = p.lookback / 2
        judged = tel
        if latest_only:  # live detection judges each device at its latest reading only
            judged = tel.filter(pl.col("ts") == pl.col("ts").max().over("device_id"))
        df = judged.with_columns(t_back=pl.col("ts") - p.lookback, t_half=pl.col("ts") - half)
        df = (
            df.sort("t_back")
            .join_asof(
                right.sort("ts_r"),
                left_on="t_back",
                right_on="ts_r",
                by=keys,
                strategy="backward",
                check_sortedness=False,
            )
            .rename({"v_r": "v_back"})
            .drop("ts_r")
            .sort("t_half")
            .join_asof(
                right.sort("ts_r"),
                left_on="t_half",
                right_on="ts_r",
                by=keys,
                strategy="backward",
                check_sortedness=False,
            )
            .rename({"v_r": "v_half"})
            .drop("ts_r")
            .join(first, on=keys, how="left")
        )
        w = pl.col("attribute").replace_strict(dict(p.weights), default=0.0, return_dtype=pl.Float64)
        before = pl.coalesce("v_back", "first_value")
        half_v = pl.coalesce("v_half", "first_value")
        df = df.with_columns(
            before=before,
            delta=(pl.col("value") - before).clip(lower_bound=0),
            recent=(pl.col("value") - half_v).clip(lower_bound=0),
            earlier=(half_v - before).clip(lower_bound=0),
        ).with_columns(
            accelerating=(pl.col("recent") > pl.col("earlier")) & (pl.col("earlier") > 0),
            level=pl.when(pl.col("attribute").is_in(list(p.level_attributes)))
            .then(pl.col("value").clip(lower_bound=0))
            .otherwise(0.0),
        )
        df = df.with_columns(
            contribution=w
            * (
                pl.col("delta").log1p()
                + p.accel_bonus * pl.col("accelerating").cast(pl.Float64)
                + p.level_weight * pl.col("level").log1p()
            )
        )
        per_device = df.group_by("customer_id", "device_id", "ts").agg(
            total=pl.col("contribution").sum(),
            rising=(pl.col("delta") > 0).any(),
            top_attribute=pl.col("attribute").sort_by("contribution").last(),
            top_before=pl.col("before").sort_by("contribution").last(),
            top_value=pl.col("value").sort_by("contribution").last(),
            top_delta=pl.col("delta").sort_by("contribution").last(),
            counters=pl.struct("attribute", "value", "before", "delta", "accelerating").sort_by("attribute"),
        )
        per_device = per_device.with_columns(risk=1.0 - (-pl.col("total")).exp()).with_columns(
            fires=pl.col("risk") >= p.min_risk
        )
        per_device = per_device.sort("ts").join_asof(
            models, on="ts", by="device_id", strategy="backward", check_sortedness=False
        )
        return per_device.sort("customer_id", "device_id", "ts")

    def score_history(
        self, frames: Mapping[str, pl.DataFrame], *, runs: Sequence[datetime] | None = None, **context: Any
    ) -> pl.DataFrame:
        """Every (device, reading time) the trip wire would fire at, in ``FINDINGS_SCHEMA``: it scores each
        reading as it arrives, so ``runs`` is not needed (see ``TripWire.score_history``)."""
        tel = frames.get("telemetry")
        if tel is None or tel.height == 0:
            return empty_findings()
        if self.params.min_risk > 0:
            tel = tel.filter(pl.col("device_id").is_in(self.may_fire(tel).implode()))
        hist = self.risk_history(tel)
        if hist.height == 0:
            return empty_findings()
        return self._findings(hist.filter(pl.col("fires")))

    def may_fire(self, telemetry: pl.DataFrame) -> pl.Series:
        """Device ids with a watched counter that ever changes, or a current-state counter above zero.

        Every other device has delta, acceleration and level 0 at each reading, so risk 0: it never fires
        while ``min_risk > 0``, and ``score_history`` skips it (most devices are healthy and flat).

        >>> from datetime import UTC, datetime
        >>> t = [datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2)]
        >>> tel = pl.DataFrame({"device_id": ["flat", "flat", "up", "up"], "ts": t + t,
        ...     "attribute": ["smart_5_raw"] * 4, "value": [3.0, 3.0, 0.0, 1.0]})
        >>> DeviceTripWire().may_fire(tel).to_list()
        ['up']
        """
        p = self.params
        value = pl.col("value").cast(pl.Float64)
        return (
            telemetry.filter(pl.col("attribute").is_in(list(p.weights)))
            .group_by("device_id", "attribute")
            .agg(
                (value.max() != value.min())
                | (value.null_count() > 0)  # unknown readings, non-finite values: judged in full
                | (~value.is_finite()).any()
                | (pl.col("attribute").first().is_in(list(p.level_attributes)) & (value.max() > 0))
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
        latest = hist.filter(
            (pl.col("ts") == pl.col("ts").max().over("device_id"))
            & (pl.col("ts") >= as_of - self.params.max_staleness)
            & pl.col("fires")
        )
        return self._findings(latest).with_columns(ts=pl.lit(as_of).cast(pl.Datetime("us", "UTC")))

    def _findings(self, fired: pl.DataFrame) -> pl.DataFrame:
        if fired.height == 0:
            return empty_findings()
        p = self.params
        days = max(1, round(p.lookback / timedelta(days=1)))
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
            pl.when(pl.col("top_delta") > 0)
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
            counters=pl.col("counters"),
        ).struct.json_encode()
        out = fired.with_columns(
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
