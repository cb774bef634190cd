"""Playbook files (validation with file:line errors) and the live decision run into the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from forewarn.cli import app
from forewarn.context import Context
from forewarn.decide.control import in_control
from forewarn.decide.engine import approve, held, run_playbooks
from forewarn.decide.playbooks import PlaybookError, load_playbooks
from forewarn.detect.registry import TRIP_WIRES
from forewarn.state import audit
from forewarn.state.db import transaction, upgrade
from forewarn.state.models import (
    AffectedCustomer,
    Consent,
    Customer,
    Finding,
    Incident,
    OutboxMessage,
    Service,
    Ticket,
)
from forewarn.timeutil import parse_duration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "playbooks"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 12:00 UTC: daytime in Europe


def write(tmp_path: Path, text: str, name: str = "pb.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- files ----


def test_examples_cover_every_trip_wire_and_outages() -> None:
    pset = load_playbooks(EXAMPLES)
    kinds = {p.when.kind for p in pset.playbooks}
    assert kinds >= {*TRIP_WIRES, "outage"}
    assert {p.mode for p in pset.playbooks} >= {"live", "shadow"}
    assert any(a.task for p in pset.playbooks for a in p.then)
    assert any(a.webhook for p in pset.playbooks for a in p.then)
    assert pset.guardrails.budget.max_messages == 3


def test_errors_name_file_line_field_and_expectation(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "playbooks:\n"
        "  - name: a\n"
        "    mode: live\n"
        "    when:\n"
        "      kind: usage\n"
        "    then:\n"
        "      - notify: {template: playbook_usage, priority: urgent}\n"
        "      - task: {assignee: team:x}\n"
        "    cooldown: soon\n"
        "    holdout: 1.5\n"
        "    colour: red\n",
    )
    with pytest.raises(PlaybookError) as e:
        load_playbooks(p)
    got = {(line, field): msg for _f, line, field, msg in e.value.problems}
    assert {_f for _f, *_ in e.value.problems} == {str(p)}
    assert "'critical', 'high', 'normal' or 'low'" in got[(7, "playbooks[0].then[0].notify.priority")]
    assert "urgent" in got[(7, "playbooks[0].then[0].notify.priority")]
    assert got[(8, "playbooks[0].then[1].task.title")] == "required field is missing"
    assert "duration such as 7d" in got[(9, "playbooks[0].cooldown")]
    assert "less than 1" in got[(10, "playbooks[0].holdout")]
    assert got[(11, "playbooks[0].colour")].startswith("unknown field; expected one of name,")


def test_unknown_kind_missing_template_duplicate_names_yaml_errors(tmp_path: Path) -> None:
    a = write(
        tmp_path,
        "playbooks:\n  - name: a\n    when: {kind: weather}\n"
        "    then: [{notify: {template: no_such_template}}]\n",
        "a.yaml",
    )
    with pytest.raises(PlaybookError) as e:
        load_playbooks(a)
    assert "expected one of usage, cadence" in str(e.value) and ":3: playbooks[0].when.kind" in str(e.value)
    b = write(
        tmp_path,
        "playbooks:\n  - name: a\n    when: {kind: usage}\n"
        "    then: [{notify: {template: no_such_template, channels: [sms]}}]\n",
        "b.yaml",
    )
    with pytest.raises(
        PlaybookError,
        match=r"b.yaml:4: playbooks\[0\].then\[0\].notify.template: expected a "
        r"template no_such_template.sms.j2",
    ):
        load_playbooks(b)
    ok = "playbooks:\n  - name: same\n    when: {kind: usage}\n"
    ok += "    then: [{notify: {template: playbook_usage}}]\n"
    d1, d2 = write(tmp_path, ok, "d1.yaml"), write(tmp_path, ok, "d2.yaml")
    with pytest.raises(PlaybookError, match=r"d2.yaml:2: playbooks\[0\].name: expected a unique name"):
        load_playbooks(d1, d2)
    bad = write(tmp_path, "playbooks:\n  - name: [unclosed\n", "bad.yaml")
    with pytest.raises(PlaybookError, match=r"bad.yaml:3: \(yaml\): expected valid YAML"):
        load_playbooks(bad)


def test_durations() -> None:
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration("36h") == timedelta(hours=36)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("tomorrow")


def test_cli_check(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["playbooks", "check", str(EXAMPLES)])
    assert ok.exit_code == 0, ok.output
    assert "usage-drop" in ok.output
    # off a terminal: one line per playbook (not squeezed into 80 columns), durations as people say them
    bill = next(line for line in ok.output.splitlines() if "bill-shock" in line)
    assert "25 days" in bill and "0:00:00" not in ok.output and "notify, task" in bill
    assert "9 playbooks in 8 files" in ok.output
    bad = write(
        tmp_path,
        "playbooks:\n  - name: a\n    mode: loud\n    when: {kind: usage}\n"
        "    then: [{notify: {template: playbook_usage}}]\n",
    )
    res = runner.invoke(app, ["playbooks", "check", str(bad)])
    assert res.exit_code == 1
    assert (
        f"{bad}:3" in res.output
        and "playbooks[0].mode" in res.output
        and "'off', 'shadow' or 'live'" in (res.output)
    )


# ---- the live run ----

PLAYBOOKS = """
guardrails:
  budget: {max_messages: 2, window: 7d}
  min_confidence: 0.5
playbooks:
  - name: drop
    mode: live
    when: {kind: usage, condition: "usage:drop:*"}
    then:
      - notify: {channels: [sms, email], template: playbook_usage, priority: normal}
      - task: {assignee: "team:care", title: "Call about the drop", due: 4h}
    cooldown: 14d
    expiry: 3d
  - name: bill
    mode: shadow
    when: {kind: billing}
    then:
      - notify: {channels: [email], template: playbook_billing, priority: high, topic: billing}
      - webhook: {url: "http://127.0.0.1:9/fix", payload: {action: recheck}}
  - name: outage-biz
    mode: live
    when: {kind: outage}
    then:
      - notify: {channels: [email], template: playbook_outage, priority: critical, topic: outage}
"""


def _seed(ctx: Context) -> None:
    with transaction(ctx.engine) as s:
        for i in range(8):
            s.add(
                Customer(
                    id=f"c{i}",
                    name=f"C{i}",
                    email=f"c{i}@example.com",
                    phone=None if i % 2 else "+3212",
                    timezone="Europe/Brussels",
                    channels=[],
                    attributes={},
                )
            )
        s.flush()
        s.add(Consent(customer_id="c3", channel="email", topic="usage", granted=False, source="import"))
        s.add(
            Ticket(
                external_id="t1",
                customer_id="c5",
                channel="phone",
                topic="usage",
                status="open",
                opened_at=NOW - timedelta(hours=3),
            )
        )

        def finding(cid: str, kind: str, cond: str, conf: float = 0.9) -> Finding:
            return Finding(
                customer_id=cid,
                kind=kind,
                condition=cond,
                score=5.0,
                confidence=conf,
                severity="warning",
                explanation=f"{kind} changed",
                evidence={},
                first_detected_at=NOW - timedelta(hours=6),
                last_detected_at=NOW - timedelta(hours=1),
            )

        for i in range(6):
            s.add(finding(f"c{i}", "usage", "usage:drop:data_gb", conf=0.3 if i == 4 else 0.9))
        s.add(finding("c0", "billing", "billing:shock"))
        s.add(Service(id="net", name="Network"))
        s.flush()
        inc = Incident(
            title="Outage", status="investigating", severity="major", started_at=NOW - timedelta(hours=2)
        )
        s.add(inc)
        s.flush()
        s.add(AffectedCustomer(incident_id=inc.id, customer_id="c6", service_id="net", region="r1"))
        s.add(AffectedCustomer(incident_id=inc.id, customer_id="c7", service_id="net", region="r1"))
        # c7 already got the incident notice from the incidents stage: the playbook must not repeat it
        s.add(
            OutboxMessage(
                idempotency_key=f"incident:{inc.id}:u0:c7:email",
                customer_id="c7",
                channel="email",
                topic="outage",
                thread_key=f"incident:{inc.id}:c7",
                priority="critical",
                status="sent",
                incident_id=inc.id,
                payload={"template": "incident_open"},
                sent_at=NOW - timedelta(hours=1),
            )
        )


def _rows(ctx: Context) -> list[OutboxMessage]:
    with transaction(ctx.engine) as s:
        return list(s.execute(select(OutboxMessage).where(OutboxMessage.playbook.is_not(None))).scalars())


def test_run_playbooks_records_every_decision(store: Context, tmp_path: Path) -> None:
    ctx = store
    _seed(ctx)
    pset = load_playbooks(write(tmp_path, PLAYBOOKS))
    summary = run_playbooks(ctx, pset, as_of=NOW, now=NOW)
    rows = {(r.customer_id, r.playbook, r.channel): r for r in _rows(ctx)}

    # live notify on the first consented channel with an address (sms needs a phone)
    assert rows[("c0", "drop", "sms")].status == "pending"
    assert rows[("c1", "drop", "email")].status == "pending"  # no phone -> email
    assert rows[("c0", "drop", "sms")].payload["unsubscribe_url"].startswith("http://127.0.0.1:8000/u/")
    assert rows[("c0", "drop", "sms")].thread_key == "usage:drop:data_gb:c0"
    # c3 revoked email for usage and has no phone
    c3 = rows[("c3", "drop", "sms")]
    assert c3.status == "suppressed" and "consent" in c3.reason
    # open ticket on the topic
    assert (
        rows[("c5", "drop", "sms")].status == "suppressed"
        and "open ticket" in rows[("c5", "drop", "sms")].reason
    )
    # low confidence: the notify waits for approval, and so does its task
    assert rows[("c4", "drop", "sms")].status == "held"
    assert rows[("c4", "drop", "task")].status == "held"
    # tasks for the others, due in 4h
    task = rows[("c0", "drop", "task")]
    assert task.status == "open" and task.address == "team:care"
    assert task.next_attempt_at == NOW + timedelta(hours=4)
    # shadow playbook: recorded, nothing sent (its webhook neither)
    assert rows[("c0", "bill", "email")].status == "shadow"
    assert rows[("c0", "bill", "webhook")].status == "shadow"
    # outage: c6 gets the critical notice; c7's thread already has the incident notice
    assert rows[("c6", "outage-biz", "email")].status == "pending"
    assert rows[("c7", "outage-biz", "email")].status == "suppressed"
    assert "incident-notices" in rows[("c7", "outage-biz", "email")].reason
    # every non-sending row says why
    assert all(r.reason for r in rows.values() if r.status not in ("pending", "open"))
    assert summary.enqueued == len(rows)
    assert summary.by_playbook["drop"]["held"] == 2

    # a re-run decides nothing new
    again = run_playbooks(ctx, pset, as_of=NOW, now=NOW + timedelta(minutes=5))
    assert again.enqueued == 0 and len(_rows(ctx)) == len(rows)

    # the approval queue
    queue = held(ctx)
    assert {q["customer_id"] for q in queue} == {"c4"}
    assert approve(ctx, queue[0]["id"], now=NOW)
    assert not approve(ctx, queue[0]["id"], now=NOW)


def test_quiet_hours_defer_and_budget_counts_incident_notices(store: Context, tmp_path: Path) -> None:
    ctx = store
    _seed(ctx)
    pset = load_playbooks(write(tmp_path, PLAYBOOKS))
    night = datetime(2026, 3, 10, 23, 0, tzinfo=UTC)  # midnight in Brussels
    with transaction(ctx.engine) as s:  # c1 already had two messages this week: the budget (2) is used
        for k in range(2):
            s.add(
                OutboxMessage(
                    idempotency_key=f"old{k}",
                    customer_id="c1",
                    channel="email",
                    topic="x",
                    thread_key=f"old{k}",
                    status="sent",
                    payload={"template": "t"},
                    sent_at=night - timedelta(days=2 + k),
                )
            )
    run_playbooks(ctx, pset, as_of=NOW, now=night)
    rows = {(r.customer_id, r.playbook, r.channel): r for r in _rows(ctx)}
    deferred = rows[("c0", "drop", "sms")]
    assert deferred.status == "pending" and deferred.reason.startswith("deferred: quiet hours")
    assert deferred.next_attempt_at == datetime(2026, 3, 11, 7, 0, tzinfo=UTC)  # 08:00 in Brussels
    assert rows[("c1", "drop", "email")].status == "suppressed"
    assert "fatigue budget" in rows[("c1", "drop", "email")].reason
    # critical overrides quiet hours (settings.delivery.critical_overrides_quiet_hours)
    assert rows[("c6", "outage-biz", "email")].next_attempt_at == night


def test_control_group_is_recorded_as_would_have_sent(store: Context, tmp_path: Path) -> None:
    ctx = store
    with transaction(ctx.engine) as s:
        for i in range(40):
            s.add(Customer(id=f"h{i}", email=f"h{i}@example.com", timezone="UTC", channels=[], attributes={}))
        s.flush()
        for i in range(40):
            s.add(
                Finding(
                    customer_id=f"h{i}",
                    kind="usage",
                    condition="usage:drop:data_gb",
                    score=5,
                    confidence=1,
                    explanation="",
                    evidence={},
                    first_detected_at=NOW,
                    last_detected_at=NOW,
                )
            )
    text = PLAYBOOKS.replace("    cooldown: 14d\n", "    cooldown: 14d\n    holdout: 0.5\n", 1)
    run_playbooks(ctx, load_playbooks(write(tmp_path, text)), as_of=NOW, now=NOW)
    notify = [r for r in _rows(ctx) if r.playbook == "drop" and r.channel == "email"]
    control = {r.customer_id for r in notify if r.status == "control"}
    assert control == {f"h{i}" for i in range(40) if in_control(f"h{i}", "drop", 0.5)}
    assert 5 < len(control) < 35
    assert all("would have sent" in r.reason for r in notify if r.status == "control")
    tasks = {r.customer_id: r.status for r in _rows(ctx) if r.channel == "task"}
    assert all(tasks[c] == "control" for c in control)


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_every_playbook_template_renders(channel: str) -> None:
    from forewarn.deliver.channels.base import CustomerView
    from forewarn.deliver.render import render_template

    names = sorted(
        {a.notify.template for p in load_playbooks(EXAMPLES).playbooks for a in p.then if a.notify}
    )
    assert len(names) >= 7
    for name in names:
        r = render_template(
            name,
            channel,
            {
                "customer": CustomerView("c1", name="Ana"),
                "explanation": "Your bill is 2.4x your usual.",
                "unsubscribe_url": "http://127.0.0.1:8000/u/t.s",
            },
        )
        assert "Your bill is 2.4x your usual." in r.body and "http://127.0.0.1:8000/u/t.s" in r.body
        assert bool(r.subject) == (channel == "email")


def test_overflow_folds_into_a_digest_sent_when_the_budget_has_room(store: Context, tmp_path: Path) -> None:
    from forewarn.decide.digest import send_digests

    ctx = store
    with transaction(ctx.engine) as s:
        s.add(
            Customer(id="d1", name="Dee", email="d1@example.com", timezone="UTC", channels=[], attributes={})
        )
        s.flush()
        for cond in ("usage:drop:data_gb", "usage:drop:minutes"):
            s.add(
                Finding(
                    customer_id="d1",
                    kind="usage",
                    condition=cond,
                    score=5,
                    confidence=1,
                    explanation=f"{cond} fell.",
                    evidence={},
                    first_detected_at=NOW,
                    last_detected_at=NOW,
                )
            )
    text = (
        "guardrails:\n  budget: {max_messages: 1, window: 7d, overflow: digest}\n"
        "playbooks:\n  - name: drop\n    mode: live\n    when: {kind: usage}\n"
        "    then: [{notify: {channels: [email], template: playbook_usage}}]\n    cooldown: 0s\n"
    )
    pset = load_playbooks(write(tmp_path, text))
    run_playbooks(ctx, pset, as_of=NOW, now=NOW)
    rows = _rows(ctx)
    assert sorted(r.status for r in rows) == ["pending", "suppressed"]
    folded = next(r for r in rows if r.status == "suppressed")
    assert "folded into the digest" in folded.reason
    # the budget is still used: no digest yet
    assert send_digests(ctx, pset, now=NOW + timedelta(days=1)) == 0
    # a week later it fits, once
    assert send_digests(ctx, pset, now=NOW + timedelta(days=8)) == 1
    assert send_digests(ctx, pset, now=NOW + timedelta(days=8, hours=1)) == 0
    digest = next(r for r in _rows(ctx) if r.playbook == "digest")
    assert digest.status == "pending" and digest.payload["items"] == [folded.payload["explanation"]]
    assert digest.payload["template"] == "playbook_digest"


def test_cli_run_held_approve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forewarn.config import get_settings

    monkeypatch.setenv("FOREWARN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FOREWARN_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        upgrade(get_settings().database_url)
        ctx = Context(get_settings())
        _seed(ctx)
        ctx.close()
        pb = write(tmp_path, PLAYBOOKS)
        runner = CliRunner()
        res = runner.invoke(
            app, ["playbooks", "run", str(pb), "--as-of", NOW.isoformat(), "--now", NOW.isoformat(), "--json"]
        )
        assert res.exit_code == 0, res.output
        assert '"enqueued"' in res.output and '"held": 2' in res.output
        res = runner.invoke(app, ["playbooks", "held"])
        assert res.exit_code == 0 and "c4" in res.output
        ctx = Context(get_settings())
        [first, *_] = held(ctx)
        ctx.close()
        assert runner.invoke(app, ["playbooks", "approve", str(first["id"])]).exit_code == 0
        assert runner.invoke(app, ["playbooks", "approve", str(first["id"])]).exit_code == 1
        ctx = Context(get_settings())
        with transaction(ctx.engine) as s:  # the approval (not the repeat, which changed nothing) is audited
            (entry,) = audit.entries(s)
        ctx.close()
        assert (entry.action, entry.target, entry.actor[:4]) == (
            "playbook.approved",
            f"outbox:{first['id']}",
            "cli:",
        )
        bad = runner.invoke(app, ["playbooks", "run", str(pb), "--as-of", "soon"])
        assert bad.exit_code != 0 and "ISO-8601" in bad.output
    finally:
        get_settings.cache_clear()
