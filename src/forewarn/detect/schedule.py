"""The schedule trip wire: what is already known to be coming, told ahead of time.

From kind ``subscription`` (rows with ``ts <= as_of``; their ``due_date`` is what lies ahead), within a lead
window before ``due_date`` (``today <= due_date <= today + lead``, UTC days):

- ``schedule:renewal_due:<due_date>``: a renewal falls due (not if the customer cancelled after the notice);
- ``schedule:card_expiry:<due_date>``: the card on file expires;
- ``schedule:plan_change:<due_date>``: a plan or price change takes effect (``details`` says what changes);
- ``schedule:maintenance:<service_id>:<due_date>``: planned maintenance on a service the customer depends on.
  A row with ``customer_id`` ``"*"`` applies to every customer depending on ``service_id`` (in context
  ``dependencies``; ``details`` may be a JSON object with ``region`` to narrow it and ``window`` to show);
  a customer's own row counts when they depend on that service (or when no ``dependencies`` are given).

For one (customer, event type, service) the newest row wins, so a rescheduled maintenance or renewal replaces
the old notice. From kind ``shipment`` (each ``shipment_id`` in its latest state):

- ``schedule:shipment_late:<shipment_id>``: not delivered, and its expected date is later than promised, or
  the promised date has passed (until ``shipment_stale_days`` after it); ``lost`` is critical.

>>> from datetime import date, datetime, UTC
>>> ship = pl.DataFrame({"customer_id": ["c1"], "ts": [datetime(2026, 3, 5, tzinfo=UTC)],
...     "shipment_id": ["S1"], "promised_date": [date(2026, 3, 9)], "expected_date": [date(2026, 3, 12)],
...     "status": ["delayed"], "carrier": ["DHL"]})
>>> print(ScheduleTripWire().detect({"shipment": ship}, datetime(2026, 3, 6, tzinfo=UTC))["explanation"][0])
Your order S1 is now expected on 12 March 2026, 3 days later than the 9 March 2026 we promised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import polars as pl

from forewarn.detect.base import Params, as_findings, empty_findings, point_in_time

NOTICE_TOPIC = {
    "renewal_due": "account",
    "card_expiry": "billing",
    "plan_change": "billing",
    "maintenance": "outage",
}
NOTICE_SEVERITY = {
    "renewal_due": "info",
    "card_expiry": "warning",
    "plan_change": "info",
    "maintenance": "info",
}


@dataclass(frozen=True)
class ScheduleParams(Params):
    """Lead windows (days before the due date a notice starts) and shipment lateness rules."""

    renewal_lead_days: int = 14
    plan_change_lead_days: int = 14
    card_expiry_lead_days: int = 30
    maintenance_lead_days: int = 7
    broadcast_customer: str = "*"  # subscription rows for every dependent of the service
    shipment_grace_days: int = 0  # later than promised by more than this is late
    shipment_stale_days: int = 60  # stop telling about an undelivered shipment this long after the promise


def long_date(d: date) -> str:
    """
    >>> long_date(date(2026, 3, 9))
    '9 March 2026'
    """
    return f"{d.day} {d:%B %Y}"


def _in_days(n: int) -> str:
    return "today" if n == 0 else "tomorrow" if n == 1 else f"in {n} days"


def _details(raw: str | None) -> dict[str, Any]:
    """``details`` as a dict: a JSON object's fields, or free text as ``{"text": ...}``."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"text": raw}
    return value if isinstance(value, dict) else {"text": raw}


class ScheduleTripWire:
    """Renewals, card expiry, planned maintenance on services the customer uses, late shipments."""

    name: ClassVar[str] = "schedule"
    kinds: ClassVar[tuple[str, ...]] = ("subscription", "shipment")

    def __init__(self, **overrides: Any) -> None:
        known = {f.name for f in fields(ScheduleParams)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(
                f"schedule trip wire: unknown parameter(s) {sorted(unknown)}; expected {sorted(known)}"
            )
        self.params = replace(ScheduleParams(), **overrides)

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
        rows: list[dict[str, Any]] = []
        subs = frames.get("subscription")
        if subs is not None and subs.height:
            rows += self._notices(point_in_time(subs, as_of), as_of, context.get("dependencies"))
        ships = frames.get("shipment")
        if ships is not None and ships.height:
            rows += self._shipments(point_in_time(ships, as_of), as_of)
        if not rows:
            return empty_findings()
        return as_findings(pl.DataFrame(rows)).sort("customer_id", "condition")

    def _row(self, customer_id: str, condition: str, as_of: datetime, **values: Any) -> dict[str, Any]:
        values["evidence"] = json.dumps(values["evidence"], sort_keys=True, default=str)
        return {"customer_id": customer_id, "kind": self.name, "condition": condition, "ts": as_of, **values}

    # -- subscription notices ---------------------------------------------------------------------------

    def _notices(
        self, subs: pl.DataFrame, as_of: datetime, dependencies: pl.DataFrame | None
    ) -> list[dict[str, Any]]:
        p = self.params
        today = as_of.date()
        for col in ("service_id", "details", "plan_from", "plan_to"):
            if col not in subs.columns:
                subs = subs.with_columns(pl.lit(None, dtype=pl.String()).alias(col))
        cancelled = (
            subs.filter(pl.col("event_type") == "cancellation")
            .group_by("customer_id")
            .agg(pl.col("ts").max().alias("cancelled_at"))
        )
        lead = {"renewal_due": p.renewal_lead_days, "card_expiry": p.card_expiry_lead_days}
        lead |= {"plan_change": p.plan_change_lead_days, "maintenance": p.maintenance_lead_days}
        latest = (
            subs.filter(
                pl.col("event_type").is_in(pl.Series(list(lead)).implode()), pl.col("due_date").is_not_null()
            )
            .sort("ts")
            .unique(["customer_id", "event_type", "service_id"], keep="last", maintain_order=True)
            .join(cancelled, on="customer_id", how="left")
        )
        rows = []
        for r in latest.sort("customer_id", "event_type", "service_id").iter_rows(named=True):
            days_left = (r["due_date"] - today).days
            window = lead[r["event_type"]]
            if not 0 <= days_left <= window:
                continue
            kind = r["event_type"]
            if kind == "renewal_due" and r["cancelled_at"] is not None and r["cancelled_at"] >= r["ts"]:
                continue
            details = _details(r["details"])
            for customer_id in self._audience(r, details, dependencies):
                rows.append(self._notice(customer_id, r, details, days_left, window, as_of))
        return rows

    def _audience(
        self, r: dict[str, Any], details: dict[str, Any], dependencies: pl.DataFrame | None
    ) -> list[str]:
        """Who a notice is for: the row's customer, or for maintenance the dependents of the service."""
        if r["event_type"] != "maintenance" or r["service_id"] is None:
            return [] if r["customer_id"] == self.params.broadcast_customer else [r["customer_id"]]
        if dependencies is None:
            return [] if r["customer_id"] == self.params.broadcast_customer else [r["customer_id"]]
        deps = dependencies.filter(pl.col("service_id") == r["service_id"])
        region = details.get("region")
        if region and region != "*":
            deps = deps.filter(pl.col("region").is_in([region, "*"]))
        users = set(deps["customer_id"].to_list())
        if r["customer_id"] == self.params.broadcast_customer:
            return sorted(users)
        return [r["customer_id"]] if r["customer_id"] in users else []

    def _notice(
        self,
        customer_id: str,
        r: dict[str, Any],
        details: dict[str, Any],
        days_left: int,
        window: int,
        as_of: datetime,
    ) -> dict[str, Any]:
        kind, due = r["event_type"], r["due_date"]
        when = f"{long_date(due)} ({_in_days(days_left)})"
        if kind == "renewal_due":
            plan = r["plan_to"] or r["plan_from"]
            text = f"Your {plan + ' ' if plan else ''}subscription renews on {when}."
            condition = f"schedule:renewal_due:{due.isoformat()}"
        elif kind == "card_expiry":
            text = (
                f"The card on your account expires on {when}; "
                "please update it before then so your service is not interrupted."
            )
            condition = f"schedule:card_expiry:{due.isoformat()}"
        elif kind == "plan_change":
            old, new = r["plan_from"], r["plan_to"]
            if old and new and old != new:
                text = f"Your plan changes from {old} to {new} on {when}"
            else:
                text = f"Your {(new or old) + ' ' if new or old else ''}plan changes on {when}"
            text += f": {details['text']}." if details.get("text") else "."
            condition = f"schedule:plan_change:{due.isoformat()}"
        else:
            slot = f" at {details['window']}" if details.get("window") else ""
            note = f" ({details['text']})" if details.get("text") else ""
            text = (
                f"Planned maintenance on {r['service_id']} on {long_date(due)}{slot} ({_in_days(days_left)}) "
                f"may briefly interrupt your service{note}."
            )
            condition = f"schedule:maintenance:{r['service_id']}:{due.isoformat()}"
        evidence = {
            "event_type": kind,
            "due_date": due.isoformat(),
            "days_left": days_left,
            "lead_days": window,
            "service_id": r["service_id"],
            "notice_ts": r["ts"].isoformat(),
            "details": details or None,
        }
        return self._row(
            customer_id,
            condition,
            as_of,
            score=1.0 - days_left / (window + 1.0),  # nearer -> higher
            confidence=1.0,
            severity=NOTICE_SEVERITY[kind],
            topic=NOTICE_TOPIC[kind],
            explanation=text,
            evidence=evidence,
        )

    # -- shipments -----------------------------------------------------------------------------------------

    def _shipments(self, ships: pl.DataFrame, as_of: datetime) -> list[dict[str, Any]]:
        p = self.params
        today = as_of.date()
        for col in ("status", "carrier"):
            if col not in ships.columns:
                ships = ships.with_columns(pl.lit(None, dtype=pl.String()).alias(col))
        latest = ships.sort("ts").unique("shipment_id", keep="last", maintain_order=True).sort("shipment_id")
        grace = timedelta(days=p.shipment_grace_days)
        rows = []
        for r in latest.iter_rows(named=True):
            status, promised, expected = r["status"], r["promised_date"], r["expected_date"]
            if status == "delivered" or today > promised + timedelta(days=p.shipment_stale_days):
                continue
            pushed = expected is not None and expected > promised + grace
            overdue = today > promised + grace
            if not (pushed or overdue or status == "lost"):
                continue
            late_days = max((expected - promised).days if expected else 0, (today - promised).days, 0)
            if status == "lost":
                text = f"Your order {r['shipment_id']} appears to be lost in transit; we are looking into it."
            elif pushed and expected >= today:
                text = (
                    f"Your order {r['shipment_id']} is now expected on {long_date(expected)}, "
                    f"{(expected - promised).days} days later than the {long_date(promised)} we promised."
                )
            else:
                carrier = r["carrier"] or "the carrier"
                text = (
                    f"Your order {r['shipment_id']} was due on {long_date(promised)} and has not arrived "
                    f"yet; we are checking with {carrier}."
                )
            rows.append(
                self._row(
                    r["customer_id"],
                    f"schedule:shipment_late:{r['shipment_id']}",
                    as_of,
                    score=float(late_days),
                    confidence=0.9 if pushed or status == "lost" else 0.6,
                    severity="critical" if status == "lost" else "warning",
                    topic="shipping",
                    explanation=text,
                    evidence={
                        "shipment_id": r["shipment_id"],
                        "status": status,
                        "carrier": r["carrier"],
                        "promised_date": promised.isoformat(),
                        "expected_date": expected.isoformat() if expected else None,
                        "days_late": late_days,
                        "as_of_ts": r["ts"].isoformat(),
                    },
                )
            )
        return rows
