"""The signal kinds forewarn understands, each with a declared schema (fields, types, units).

Every signal has ``event_id`` (idempotency: the same id is stored once), ``customer_id`` and ``ts`` (UTC).
The rest depends on the kind. The schema is the single source for validation, the DuckDB tables and the
Polars frames detection reads.

>>> KINDS["usage"].field("value").unit
'per metric (data_gb: GB, minutes: min, ...)'
>>> sorted(KINDS["usage"].required)
['customer_id', 'event_id', 'metric', 'ts', 'value']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

FieldType = Literal["str", "float", "int", "bool", "timestamp", "date", "lines"]

# One invoice line item: what was charged and why.
LINE_STRUCT = pl.Struct(
    {"code": pl.String, "description": pl.String, "amount": pl.Float64, "quantity": pl.Float64}
)

POLARS_TYPES: dict[str, pl.DataType] = {
    "str": pl.String(),
    "float": pl.Float64(),
    "int": pl.Int64(),
    "bool": pl.Boolean(),
    "timestamp": pl.Datetime("us", "UTC"),
    "date": pl.Date(),
    "lines": pl.List(LINE_STRUCT),
}

DUCKDB_TYPES: dict[str, str] = {
    "str": "VARCHAR",
    "float": "DOUBLE",
    "int": "BIGINT",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
    "lines": "STRUCT(code VARCHAR, description VARCHAR, amount DOUBLE, quantity DOUBLE)[]",
}

# What a person reading an error is told to provide, per type.
EXPECTED: dict[str, str] = {
    "str": "a non-empty string",
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "timestamp": "an ISO-8601 timestamp such as 2026-01-31T12:00:00Z (no zone means UTC)",
    "date": "a date such as 2026-01-31",
    "lines": 'a JSON list of {"code", "description", "amount", "quantity"} objects',
}


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    required: bool = False
    unit: str | None = None
    description: str = ""
    choices: tuple[str, ...] | None = None

    @property
    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return EXPECTED[self.type]


COMMON: tuple[Field, ...] = (
    Field("event_id", "str", True, description="unique id of this event; re-sending it is a no-op"),
    Field("customer_id", "str", True, description="the customer it concerns"),
    Field("ts", "timestamp", True, description="when it happened (UTC)"),
)


@dataclass(frozen=True)
class SignalKind:
    name: str
    description: str
    fields: tuple[Field, ...]
    common: tuple[Field, ...] = field(default=COMMON)

    @property
    def all_fields(self) -> tuple[Field, ...]:
        return self.common + self.fields

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.all_fields]

    @property
    def required(self) -> set[str]:
        return {f.name for f in self.all_fields if f.required}

    def field(self, name: str) -> Field:
        for f in self.all_fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({f.name: POLARS_TYPES[f.type] for f in self.all_fields})

    @property
    def table(self) -> str:
        return f"signal_{self.name}"


_KINDS = (
    SignalKind(
        "usage",
        "a metered value for one period (daily data volume, minutes, API calls...)",
        (
            Field("metric", "str", True, description="what is metered, e.g. data_gb"),
            Field("value", "float", True, unit="per metric (data_gb: GB, minutes: min, ...)"),
            Field("unit", "str", unit=None, description="unit of value, e.g. GB"),
            Field(
                "period", "str", description="length of the period", choices=("hour", "day", "week", "month")
            ),
            Field("service_id", "str", description="service the usage is of, when known"),
        ),
    ),
    SignalKind(
        "purchase",
        "a purchase or a visit (the customer came in)",
        (
            Field("event_type", "str", True, choices=("purchase", "visit")),
            Field("amount", "float", unit="currency units"),
            Field("currency", "str"),
            Field("channel", "str", description="store, web, app..."),
        ),
    ),
    SignalKind(
        "invoice",
        "an invoice (draft before it goes out, issued after), with its line items",
        (
            Field("invoice_id", "str", True),
            Field("status", "str", True, choices=("draft", "issued")),
            Field("period_start", "date", True),
            Field("period_end", "date", True),
            Field("total", "float", True, unit="currency units"),
            Field("currency", "str"),
            Field("lines", "lines", True, description="line items"),
        ),
    ),
    SignalKind(
        "telemetry",
        "one reading of one device attribute (e.g. a SMART counter)",
        (
            Field("device_id", "str", True),
            Field("attribute", "str", True, description="e.g. smart_5_raw, temperature_c"),
            Field("value", "float", True, unit="per attribute"),
            Field("model", "str"),
        ),
    ),
    SignalKind(
        "contact",
        "an inbound contact: call, email, chat, web form",
        (
            Field("channel", "str", True, choices=("phone", "email", "chat", "web", "social", "store")),
            Field("subject", "str"),
            Field("text", "str"),
            Field(
                "topic", "str", description="outage, billing, device, usage, account..., when already known"
            ),
            Field("service_id", "str"),
        ),
    ),
    SignalKind(
        "ticket_update",
        "a status change of the ticket an inbound contact opened (a helpdesk webhook or export, or the API)",
        (
            Field("ticket_id", "str", True, description="the event_id of the contact that opened the ticket"),
            Field(
                "status",
                "str",
                True,
                description="pending: waiting for the customer; open again after solved or closed reopens it",
                choices=("open", "pending", "solved", "closed"),
            ),
        ),
    ),
    SignalKind(
        "feedback",
        "a social post, review or survey answer",
        (
            Field("source", "str", True, choices=("social", "review", "survey")),
            Field("text", "str"),
            Field("rating", "float", description="stars, CSAT, CES or NPS answer"),
            Field("survey", "str", choices=("csat", "ces", "nps")),
        ),
    ),
    SignalKind(
        "subscription",
        "a subscription event: renewal due, plan change, card expiry, cancellation",
        (
            Field(
                "event_type",
                "str",
                True,
                choices=("renewal_due", "plan_change", "card_expiry", "cancellation", "maintenance"),
            ),
            Field("due_date", "date", description="when it takes effect or falls due"),
            Field("plan_from", "str"),
            Field("plan_to", "str"),
            Field("service_id", "str"),
            Field("details", "str"),
        ),
    ),
    SignalKind(
        "shipment",
        "a shipment to the customer with its promised and currently expected delivery dates",
        (
            Field("shipment_id", "str", True),
            Field("promised_date", "date", True),
            Field("expected_date", "date", True),
            Field("status", "str", choices=("ordered", "in_transit", "delayed", "delivered", "lost")),
            Field("carrier", "str"),
        ),
    ),
    SignalKind(
        "service_metric",
        "a service-level health reading per region (error rate, traffic), for outage detection",
        (
            Field("service_id", "str", True),
            Field("region", "str", True),
            Field("metric", "str", True, description="error_rate, requests, latency_ms..."),
            Field("value", "float", True),
        ),
        common=(
            Field("event_id", "str", True, description="unique id of this event; re-sending it is a no-op"),
            Field("ts", "timestamp", True, description="when it was measured (UTC)"),
        ),
    ),
)

KINDS: dict[str, SignalKind] = {k.name: k for k in _KINDS}


def get_kind(name: str) -> SignalKind:
    """The kind called ``name``; a clear error listing the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown signal kind {name!r}; expected one of {', '.join(KINDS)}") from None
