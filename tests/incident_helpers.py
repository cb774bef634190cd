"""Shared set-up for the incident tests: a small ISP with customers, services and dependencies."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from forewarn.state.db import open_store, transaction, upgrade
from forewarn.state.models import Consent, Customer, Dependency, OutboxMessage, Service

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def store(url: str) -> Engine:
    upgrade(url)
    return open_store(url)


def seed_isp(engine: Engine) -> None:
    """12 customers: C00..C05 in north, C06..C08 in south, C09..C11 in east; all on internet,
    evens also on tv.

    C03 withheld consent for outage notices on every channel; C04 only for sms (falls back to email);
    C05 has no channels at all.
    """
    regions = ["north"] * 6 + ["south"] * 3 + ["east"] * 3
    with transaction(engine) as s:
        s.add_all([Service(id="internet", name="Internet"), Service(id="tv", name="TV")])
        for i, region in enumerate(regions):
            cid = f"C{i:02d}"
            channels = [] if cid == "C05" else (["sms", "email"] if i % 2 else ["email"])
            s.add(
                Customer(
                    id=cid,
                    name=f"Customer {i}",
                    email=f"{cid.lower()}@example.test",
                    phone=f"+3160000{i:04d}",
                    timezone="Europe/Amsterdam",
                    region=region,
                    channels=channels,
                )
            )
        s.flush()
        for i, region in enumerate(regions):
            s.add(Dependency(customer_id=f"C{i:02d}", service_id="internet", region=region))
            if i % 2 == 0:
                s.add(Dependency(customer_id=f"C{i:02d}", service_id="tv", region=region))
        s.add_all(
            [
                Consent(customer_id="C03", channel="sms", topic="outage", granted=False),
                Consent(customer_id="C03", channel="email", topic="*", granted=False),
                Consent(customer_id="C04", channel="email", topic="*", granted=False),
                Consent(customer_id="C04", channel="email", topic="outage", granted=True),
                Consent(customer_id="C01", channel="sms", topic="outage", granted=False),
            ]
        )


def outbox(engine: Engine, incident_id: int | None = None) -> list[OutboxMessage]:
    with transaction(engine) as s:
        q = select(OutboxMessage).order_by(OutboxMessage.id)
        if incident_id is not None:
            q = q.where(OutboxMessage.incident_id == incident_id)
        return list(s.scalars(q))
