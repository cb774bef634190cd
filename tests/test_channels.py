"""A channel is declared once: a plug-in channel registered here can be named in a playbook, passes
`forewarn playbooks check`, is chosen by the guardrails and the incident notices, and delivers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from forewarn.cli import app
from forewarn.context import Context
from forewarn.decide.engine import run_playbooks
from forewarn.decide.playbooks import PlaybookError, load_playbooks
from forewarn.deliver.channels.base import (
    Channel,
    Delivery,
    SendResult,
    available_channels,
    channel_spec,
    register_channel,
    unregister_channel,
)
from forewarn.deliver.render import template_names
from forewarn.deliver.worker import Worker
from forewarn.incidents.notices import fan_out
from forewarn.state.db import transaction
from forewarn.state.models import (
    AffectedCustomer,
    Consent,
    Customer,
    Finding,
    Incident,
    OutboxMessage,
    Service,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class PagerChannel(Channel):
    """A plug-in: pages a phone number (here: keeps what it paged)."""

    name = "pager"

    def __init__(self, paged: list[Delivery]) -> None:
        self.paged = paged

    def address_for(self, customer: Any) -> str | None:
        return customer.phone

    def send(self, delivery: Delivery) -> SendResult:
        self.paged.append(delivery)
        return SendResult(delivery.id, ok=True)

    def send_batch(self, deliveries: Sequence[Delivery]) -> list[SendResult]:
        return [self.send(d) for d in deliveries]


@pytest.fixture
def paged() -> Iterator[list[Delivery]]:
    sent: list[Delivery] = []
    register_channel(
        "pager",
        lambda settings, **options: PagerChannel(sent),
        address_field="phone",
        template="sms",  # short texts: the sms templates
        topics=["usage", "outage"],
    )
    yield sent
    unregister_channel("pager")


PLAYBOOK = """
playbooks:
  - name: drop
    mode: live
    when: {kind: usage}
    then:
      - notify: {channels: [pager], template: playbook_usage}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pb.yaml"
    path.write_text(text)
    return path


def test_a_plugin_channel_is_declared_once(paged: list[Delivery]) -> None:
    spec = channel_spec("pager")
    assert spec is not None and "pager" in available_channels()
    assert template_names("playbook_usage", "pager") == ["playbook_usage.sms.j2", "playbook_usage.j2"]
    assert spec.carries("usage") and not spec.carries("offer")


def test_playbooks_check_accepts_a_registered_channel_and_names_the_problem_otherwise(
    paged: list[Delivery], tmp_path: Path
) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["playbooks", "check", str(_write(tmp_path, PLAYBOOK))])
    assert ok.exit_code == 0, ok.output

    unknown = _write(tmp_path, PLAYBOOK.replace("[pager]", "[pigeon]"))
    with pytest.raises(PlaybookError) as e:
        load_playbooks(unknown)
    (problem,) = e.value.problems
    assert problem[1] == 7 and problem[2] == "playbooks[0].then[0].notify.channels"
    assert "pigeon" in problem[3] and "pager" in problem[3]

    # the pager carries usage and outage notices only; a billing playbook may not page
    billing = _write(tmp_path, PLAYBOOK.replace("kind: usage", "kind: billing"))
    with pytest.raises(PlaybookError, match="carries topic 'billing'"):
        load_playbooks(billing)


def test_a_plugin_channel_is_decided_queued_and_delivered(paged: list[Delivery], ctx: Context) -> None:
    with transaction(ctx.engine) as s:
        for cid, phone in (("c1", "+3161"), ("c2", None), ("c3", "+3163")):
            s.add(Customer(id=cid, name=cid, phone=phone, channels=["pager"], attributes={}))
        s.flush()
        s.add(Consent(customer_id="c3", channel="pager", topic="*", granted=False, source="import"))
        for cid in ("c1", "c2", "c3"):
            s.add(
                Finding(
                    customer_id=cid,
                    kind="usage",
                    condition="usage:drop:data_gb",
                    score=5.0,
                    confidence=0.9,
                    severity="warning",
                    explanation="Your data use dropped.",
                    evidence={},
                    first_detected_at=NOW - timedelta(hours=3),
                    last_detected_at=NOW - timedelta(hours=1),
                )
            )
    run_playbooks(ctx, load_playbooks(_write(ctx.settings.home, PLAYBOOK)), as_of=NOW, now=NOW)
    with transaction(ctx.engine) as s:
        rows = {r.customer_id: r for r in s.scalars(select(OutboxMessage))}
        decided = {cid: (r.channel, r.status, r.address) for cid, r in rows.items()}
        reasons = {cid: r.reason or "" for cid, r in rows.items()}
    assert decided["c1"] == ("pager", "pending", "+3161")
    # the declaration says the pager needs a phone, and consent applies to it
    assert decided["c2"][1] == "suppressed" and "no consent with an address" in reasons["c2"]
    assert decided["c3"][1] == "suppressed"

    worker = Worker(ctx, worker_id="t")  # builds the pager from its declaration, like email or sms
    assert worker.drain(now=NOW) == 1
    (page,) = paged
    assert (page.channel, page.address, page.customer_id) == ("pager", "+3161", "c1")
    assert page.subject == "" and page.body  # rendered from the sms variant: no subject line


def test_incident_notices_use_the_declared_address(paged: list[Delivery], ctx: Context) -> None:
    with transaction(ctx.engine) as s:
        s.add(Customer(id="c1", name="c1", phone="+3161", channels=["pager", "email"], attributes={}))
        s.add(
            Customer(id="c2", name="c2", email="c2@example.com", channels=["pager", "email"], attributes={})
        )
        s.add(Service(id="net", name="Network"))
        s.flush()
        inc = Incident(title="Outage", status="investigating", severity="major", started_at=NOW)
        s.add(inc)
        s.flush()
        for cid in ("c1", "c2"):
            s.add(AffectedCustomer(incident_id=inc.id, customer_id=cid, service_id="net", region="r1"))
        s.flush()
        assert fan_out(s, inc.id, 0, template="incident_open", now=NOW) == 2
        rows = {r.customer_id: (r.channel, r.address) for r in s.scalars(select(OutboxMessage))}
    # c2 has no phone: the pager is skipped for the next preferred channel
    assert rows == {"c1": ("pager", "+3161"), "c2": ("email", "c2@example.com")}


def test_a_declaration_with_an_unknown_address_field_is_refused() -> None:
    with pytest.raises(ValueError, match="address_field: expected one of"):
        register_channel("fax", lambda settings, **options: PagerChannel([]), address_field="fax_number")
    assert channel_spec("fax") is None
