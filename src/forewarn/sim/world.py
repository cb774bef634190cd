"""The simulated company, end to end: :func:`simulate` runs every generator and (optionally) writes the files
``forewarn ingest DIR`` reads, plus ``ground_truth.jsonl`` and ``world.json``.

Files (columns are the fields of ``forewarn.signals.schema``; the kind is the file stem):
``customers.jsonl services.csv dependencies.csv usage.parquet purchase.parquet invoice.jsonl telemetry.parquet
contact.jsonl feedback.jsonl subscription.csv shipment.csv service_metric.parquet ground_truth.jsonl
world.json``. Same config (seed) -> byte-identical files.

>>> w = simulate(SimConfig(customers=60, days=40, seed=5))
>>> sorted(w.frames)[:3], w.frames["usage"].schema == KINDS["usage"].polars_schema
(['contact', 'feedback', 'invoice'], True)
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from forewarn.signals.schema import KINDS
from forewarn.sim import (
    billing,
    cadence,
    contacts,
    customers,
    devices,
    outages,
    reactions,
    schedule,
    social,
    truth,
    usage,
)
from forewarn.sim.clock import epoch_us, rng
from forewarn.sim.config import SimConfig

__all__ = ["SimConfig", "World", "simulate", "write", "FILES"]

PARQUET = ("usage", "purchase", "telemetry", "service_metric")
JSONL = ("invoice", "contact", "feedback")
CSV = ("subscription", "shipment", "ticket_update")
FILES = (
    "customers.jsonl",
    "services.csv",
    "dependencies.csv",
    *(f"{k}.parquet" for k in PARQUET),
    *(f"{k}.jsonl" for k in JSONL),
    *(f"{k}.csv" for k in CSV),
    "ground_truth.jsonl",
    "world.json",
)
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class World:
    """Everything the simulator made, in memory: signal frames by kind (in the schema's types), the customer
    records, services, dependencies and the ground truth."""

    config: SimConfig
    frames: dict[str, pl.DataFrame]
    customer_lines: list[str]
    services: pl.DataFrame
    dependencies: pl.DataFrame
    truth_records: list[dict[str, Any]]
    _truth: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def customers(self) -> pl.DataFrame:
        return pl.read_ndjson(io.BytesIO("\n".join(self.customer_lines).encode()), infer_schema_length=None)

    @property
    def truth(self) -> pl.DataFrame:
        """Ground truth as a frame (see ``forewarn.sim.truth.TRUTH_SCHEMA``)."""
        if self._truth is None:
            self._truth = truth.frame(self.truth_records)
        return self._truth

    def counts(self) -> dict[str, Any]:
        return {
            "customers": len(self.customer_lines),
            "services": self.services.height,
            "dependencies": self.dependencies.height,
            "rows": {k: f.height for k, f in sorted(self.frames.items())},
            "truth": dict(sorted(Counter(r["type"] for r in self.truth_records).items())),
            "caused_contacts": sum(
                1 for r in self.truth_records if r["type"] == "contact" and r.get("cause")
            ),
        }


def conform(kind: str, df: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``df`` to the kind's schema; columns it lacks become nulls; ``ts`` may be int us."""
    schema = KINDS[kind].polars_schema
    cols = []
    for name, dtype in schema.items():
        if name not in df.columns:
            cols.append(pl.lit(None, dtype).alias(name))
        elif name == "ts" and df.schema[name] == pl.Int64:
            cols.append(pl.col(name).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        else:
            cols.append(pl.col(name).cast(dtype))
    return df.select(cols)


def simulate(config: SimConfig, out: Path | None = None) -> World:
    """Simulate the world described by ``config``; write its files to ``out`` when given."""
    cfg = config
    pop = customers.generate(cfg)
    use = usage.generate(cfg, pop)
    cad = cadence.generate(cfg, pop)
    bill = billing.generate(cfg, pop, use)
    dev = devices.generate(cfg, pop)
    out_res = outages.generate(cfg, pop)
    sched = schedule.generate(cfg, pop, dev)

    all_causes = pl.concat([use.causes, bill.causes, dev.causes, out_res.causes, sched.causes])
    caused = reactions.draw_contacts(cfg, all_causes, rng(cfg, "reactions"), epoch_us(cfg.end))
    con = contacts.build(cfg, pop, caused)
    feedback = social.generate(cfg, pop, out_res, con.meta)

    sub_parts = [sched.subscription, bill.notices.with_columns(pl.col("ts").dt.epoch("us"))]
    if out_res.maintenance_events is not None:
        sub_parts.append(out_res.maintenance_events.with_columns(pl.col("ts").dt.epoch("us")))
    subscription = pl.concat(
        [p.select(list(schedule.SUB_SCHEMA)).cast(schedule.SUB_SCHEMA) for p in sub_parts]
    )

    frames = {
        "usage": conform("usage", use.frame),
        "purchase": conform("purchase", cad.frame),
        "invoice": conform("invoice", bill.frame),
        "telemetry": conform("telemetry", dev.frame),
        "contact": conform("contact", con.frame),
        "ticket_update": conform("ticket_update", contacts.ticket_updates(cfg, con.frame)),
        "feedback": conform("feedback", feedback),
        "subscription": conform("subscription", subscription).sort(["ts", "event_id"]),
        "shipment": conform("shipment", sched.shipment).sort(["ts", "event_id"]),
        "service_metric": conform("service_metric", out_res.frame),
    }
    records = out_res.truth + use.truth + cad.truth + bill.truth + dev.truth + sched.truth + con.truth
    records.sort(key=lambda r: (r["start"], r["type"], r["id"]))
    home = {str(c): cfg.regions[r].name for c, r in zip(pop.ids, pop.region, strict=True)}
    for rec in records:  # every customer's event names the region the customer is served in
        if rec["customer_id"] is not None:
            rec["regions"] = [home[rec["customer_id"]]]
    world = World(
        config=cfg,
        frames=frames,
        customer_lines=customers.customer_lines(cfg, pop, dev.by_customer),
        services=customers.services_frame(cfg),
        dependencies=customers.dependencies_frame(cfg, pop),
        truth_records=records,
    )
    if out is not None:
        write(world, Path(out))
    return world


def _text_times(df: pl.DataFrame) -> pl.DataFrame:
    """Timestamps as ``2026-01-31T12:00:00Z`` strings for CSV and JSONL."""
    return df.with_columns(
        pl.col(c).dt.strftime(TS_FORMAT) for c, t in df.schema.items() if isinstance(t, pl.Datetime)
    )


def write(world: World, out: Path) -> None:
    """Write ``world`` to the directory ``out`` (created if needed; existing files are replaced)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "customers.jsonl").write_text("\n".join(world.customer_lines) + "\n", encoding="utf-8")
    world.services.write_csv(out / "services.csv")
    world.dependencies.write_csv(out / "dependencies.csv")
    for kind in PARQUET:
        world.frames[kind].write_parquet(out / f"{kind}.parquet", compression="zstd", statistics=True)
    for kind in JSONL:
        _text_times(world.frames[kind]).write_ndjson(out / f"{kind}.jsonl")
    for kind in CSV:
        _text_times(world.frames[kind]).write_csv(out / f"{kind}.csv")
    truth.write(world.truth_records, out / "ground_truth.jsonl")
    meta = {
        "seed": world.config.seed,
        "start": world.config.start.isoformat(),
        "days": world.config.days,
        "counts": world.counts(),
        "parameters": world.config.to_dict(),
        "files": list(FILES),
        "conventions": {
            "times": "UTC; daily usage and 5-minute service metrics are stamped at the END of their period",
            "detectable_from": "first time a point-in-time detector could see the event in the signals",
            "contacts": "contact.jsonl is the no-notice baseline (reactions.contacts_given_notices)",
        },
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
