"""Ground truth: one record per injected event, so detection and outreach can be scored.

The simulator writes it here; the file format, its reader (``load``) and the scoring against it live in
:mod:`forewarn.measure.truth`, where production code reads it.

A record is a dict with ``id, type, customer_id, service_id, regions, start, end, detectable_from, details,
affected`` (times as int64 microseconds inside the simulator, ISO-8601 UTC in ``ground_truth.jsonl``); caused
contacts also carry ``cause``, ``avoid_draw`` and ``p_avoid``.

``detectable_from`` is the first time a fair, point-in-time detector could see the event in the emitted
signals (e.g. the timestamp of the first anomalous usage row, the draft invoice, the first non-zero SMART
reading). Daily and 5-minute aggregates are stamped at the END of the period they cover, so a row with
``ts <= as_of`` only ever holds what was known at ``as_of``.

>>> rec = record("x1", "usage_spike", customer_id="C1", start=0, detectable_from=86_400_000_000)
>>> to_json(rec)["detectable_from"]
'1970-01-02T00:00:00Z'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from forewarn.measure.truth import TIME_FIELDS, TRUTH_SCHEMA, load
from forewarn.sim.clock import iso

TYPES = (
    "outage",
    "usage_spike",
    "usage_drop",
    "level_shift",
    "went_silent",
    "purchase_lapse",
    "contact_lapse",
    "bill_shock",
    "billing_error",
    "device_failure",
    "renewal_due",
    "card_expiry",
    "maintenance",
    "shipment_delay",
    "near_limit",
    "contact",
)


def record(
    id: str,
    type: str,
    *,
    customer_id: str | None = None,
    service_id: str | None = None,
    regions: list[str] | None = None,
    start: int,
    end: int | None = None,
    detectable_from: int | None = None,
    details: dict[str, Any] | None = None,
    affected: list[Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if type not in TYPES:
        raise ValueError(f"unknown ground-truth type {type!r}")
    rec: dict[str, Any] = {
        "id": id,
        "type": type,
        "customer_id": customer_id,
        "service_id": service_id,
        "regions": regions or [],
        "start": int(start),
        "end": None if end is None else int(end),
        "detectable_from": None if detectable_from is None else int(detectable_from),
        "details": details or {},
        "affected": affected or [],
    }
    rec.update(extra)
    return rec


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return v


def to_json(rec: dict[str, Any]) -> dict[str, Any]:
    out = dict(rec)
    for k in TIME_FIELDS:
        out[k] = iso(rec[k])
    if rec["type"] in ("outage", "maintenance"):
        out["affected"] = [{**a, "added_at": iso(a["added_at"])} for a in rec["affected"]]
    return _jsonable(out)


def write(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(to_json(rec), separators=(",", ":")) + "\n")


def frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """The records as a flat frame (details and affected stay JSON strings)."""
    cols: dict[str, list[Any]] = {k: [] for k in TRUTH_SCHEMA}
    for rec in records:
        j = to_json(rec)
        for k in ("id", "type", "customer_id", "service_id", "regions"):
            cols[k].append(j[k])
        for k in TIME_FIELDS:
            cols[k].append(rec[k])
        cols["cause"].append(rec.get("cause"))
        cols["avoid_draw"].append(rec.get("avoid_draw"))
        cols["p_avoid"].append(rec.get("p_avoid"))
        cols["details"].append(json.dumps(j["details"], separators=(",", ":")))
        cols["affected"].append(json.dumps(j["affected"], separators=(",", ":")))
    df = pl.DataFrame(
        {k: v for k, v in cols.items() if k not in TIME_FIELDS},
        schema={k: t for k, t in TRUTH_SCHEMA.items() if k not in TIME_FIELDS},
    )
    for k in TIME_FIELDS:
        df = df.with_columns(
            pl.Series(k, cols[k], dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        )
    return df.select(list(TRUTH_SCHEMA))


__all__ = ["TIME_FIELDS", "TRUTH_SCHEMA", "TYPES", "frame", "load", "record", "to_json", "write"]
