"""Property tests of the guardrails over random streams of findings (hypothesis).

The stream is cut into daily batches and decided with one carried state, the way the backtest and the live
engine both call ``decide``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forewarn.config import DeliverySettings
from forewarn.decide.control import in_control
from forewarn.decide.guardrails import Candidate, CustomerView, GuardrailState, Policy, decide
from forewarn.decide.playbooks import Budget, Guardrails
from forewarn.deliver.quiet_hours import next_allowed

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Adelaide"]
CHANNELS = ["email", "sms", "chat"]
TOPICS = ["usage", "billing", "device", "offer", "outage"]
PLAYBOOKS = {  # name -> (mode, holdout)
    "usage-drop": ("live", 0.0),
    "bill-shock": ("live", 0.3),
    "upsell": ("live", 0.5),
    "device-fail": ("shadow", 0.1),
    "outage": ("live", 0.0),
}
START = datetime(2026, 3, 1, tzinfo=UTC)
SENDING = {"pending", "deferred"}

customer_views = st.builds(
    CustomerView,
    timezone=st.sampled_from(ZONES),
    addresses=st.dictionaries(st.sampled_from(CHANNELS), st.just("addr"), max_size=3),
    consent=st.dictionaries(
        st.tuples(st.sampled_from(CHANNELS), st.sampled_from([*TOPICS, "*"])), st.booleans(), max_size=6
    ),
    open_ticket_topics=st.frozensets(st.sampled_from(TOPICS), max_size=2),
)


@st.composite
def candidates(draw: st.DrawFn, n_customers: int) -> Candidate:
    playbook = draw(st.sampled_from(sorted(PLAYBOOKS)))
    mode, holdout = PLAYBOOKS[playbook]
    at = START + timedelta(minutes=draw(st.integers(0, 60 * 24 * 28)))
    return Candidate(
        customer_id=f"c{draw(st.integers(0, n_customers - 1))}",
        playbook=playbook,
        mode=mode,
        action=draw(st.sampled_from(["notify"] * 4 + ["task", "webhook"])),
        kind="usage",
        condition=f"cond:{draw(st.integers(0, 3))}",
        topic=draw(st.sampled_from(TOPICS)),
        priority=draw(st.sampled_from(["critical", "high", "normal", "low"])),
        channels=tuple(draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True))),
        at=at,
        episode=f"e{draw(st.integers(0, 3))}",
        confidence=draw(st.floats(0, 1)),
        score=draw(st.floats(0, 10)),
        min_confidence=0.3,
        holdout=holdout,
        cooldown=timedelta(hours=draw(st.sampled_from([0, 12, 72]))),
        expires_at=at + timedelta(days=draw(st.sampled_from([1, 3]))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(1, 6))
    views = {f"c{i}": draw(customer_views) for i in range(n)}
    stream = draw(st.lists(candidates(n), min_size=1, max_size=80))
    budget = Budget(
        max_messages=draw(st.integers(1, 4)),
        window=timedelta(days=draw(st.integers(1, 7))),
        overflow=draw(st.sampled_from(["drop", "digest"])),
    )
    override = draw(st.booleans())
    policy = Policy.from_guardrails(
        Guardrails(budget=budget, critical_overrides_quiet_hours=override),
        DeliverySettings(quiet_hours_start=draw(st.sampled_from([21, 22, 0])), quiet_hours_end=8),
    )
    return views, stream, policy


def run(views: dict, stream: list[Candidate], policy: Policy) -> list:
    """Decide day by day with one carried state (as the backtest does)."""
    state = GuardrailState()
    by_day: dict = defaultdict(list)
    for c in stream:
        by_day[c.at.date()].append(c)
    out = []
    for day in sorted(by_day):
        out += decide(by_day[day], views, policy, state)
    return out


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(scenarios())
def test_no_customer_exceeds_the_budget(scenario: tuple) -> None:
    views, stream, policy = scenario
    sends: dict[str, list[datetime]] = defaultdict(list)
    for d in run(views, stream, policy):
        if d.status in SENDING and d.candidate.action == "notify":
            sends[d.candidate.customer_id].append(d.send_at)
    window, cap = policy.budget.window, policy.budget.max_messages
    for times in sends.values():
        times.sort()
        for i, t in enumerate(times):
            in_window = sum(1 for u in times[i:] if u < t + window)
            assert in_window <= cap, (times, window, cap)


@PROPS
@given(scenarios())
def test_nothing_non_critical_goes_out_in_quiet_hours(scenario: tuple) -> None:
    views, stream, policy = scenario
    for d in run(views, stream, policy):
        if d.status in SENDING and d.candidate.action == "notify":
            tz = views[d.candidate.customer_id].timezone
            quiet = next_allowed(d.send_at, tz, policy.quiet) is not None
            if d.candidate.priority != "critical" or not policy.critical_overrides_quiet_hours:
                assert not quiet, (d, tz)
            assert d.send_at >= d.candidate.at


@PROPS
@given(scenarios())
def test_nothing_without_consent(scenario: tuple) -> None:
    views, stream, policy = scenario
    for d in run(views, stream, policy):
        if d.status in SENDING and d.candidate.action == "notify":
            view, topic = views[d.candidate.customer_id], d.candidate.topic
            assert d.channel in view.addresses
            explicit = view.consent.get((d.channel, topic), view.consent.get((d.channel, "*")))
            if explicit is None:
                assert topic not in policy.explicit_consent_topics
            else:
                assert explicit is True
            assert topic not in view.open_ticket_topics


@PROPS
@given(scenarios())
def test_control_group_members_get_nothing_from_that_playbook(scenario: tuple) -> None:
    views, stream, policy = scenario
    for d in run(views, stream, policy):
        c = d.candidate
        if in_control(c.customer_id, c.playbook, c.holdout):
            assert d.status not in (*SENDING, "open"), d
        if c.mode == "shadow":
            assert d.status not in (*SENDING, "open"), d


@PROPS
@given(scenarios())
def test_every_suppression_has_a_reason_and_every_candidate_a_decision(scenario: tuple) -> None:
    views, stream, policy = scenario
    decisions = run(views, stream, policy)
    assert len(decisions) == len({c.decision_key for c in stream})
    for d in decisions:
        if d.status not in ("pending", "open"):
            assert d.reason and d.guardrail, d
        assert d.status in ("pending", "deferred", "suppressed", "held", "shadow", "control", "open")


def _cand(customer: str, playbook: str, priority: str, at: datetime, **kw) -> Candidate:
    base = dict(
        customer_id=customer,
        playbook=playbook,
        mode="live",
        action="notify",
        kind="usage",
        condition=f"{playbook}:x",
        topic="usage",
        priority=priority,
        channels=("email",),
        at=at,
        episode="e",
        confidence=0.9,
        score=1.0,
    )
    return Candidate(**{**base, **kw})


def test_critical_outranks_upsell_and_limits_by_priority() -> None:
    policy = Policy.from_guardrails(Guardrails(), DeliverySettings(quiet_hours_start=0, quiet_hours_end=0))
    views = {"c": CustomerView(addresses={"email": "c@example.com"})}
    noon = START + timedelta(hours=12)
    batch = [
        _cand("c", "upsell", "low", noon, topic="usage"),
        _cand("c", "outage", "critical", noon, topic="outage"),
        _cand("c", "bill", "normal", noon, topic="billing"),
    ]
    got = {d.candidate.playbook: d for d in decide(batch, views, policy, GuardrailState())}
    # default limits (3 in 7 days): critical may use all 3 slots, normal 2, low only the first
    assert got["outage"].status == "pending"
    assert got["bill"].status == "pending"
    assert got["upsell"].status == "suppressed" and "fatigue budget" in got["upsell"].reason


def test_quiet_hours_defer_and_critical_override() -> None:
    policy = Policy.from_guardrails(Guardrails(), DeliverySettings(quiet_hours_start=21, quiet_hours_end=8))
    views = {"c": CustomerView(timezone="Europe/Berlin", addresses={"sms": "+49"})}
    night = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)  # 00:30 in Berlin
    normal = _cand("c", "a", "normal", night, channels=("sms",))
    critical = _cand("c", "b", "critical", night, channels=("sms",), topic="outage")
    got = {d.candidate.playbook: d for d in decide([normal, critical], views, policy, GuardrailState())}
    assert got["a"].status == "deferred" and got["a"].send_at == datetime(2026, 1, 16, 7, tzinfo=UTC)
    assert "quiet hours" in got["a"].reason
    assert got["b"].status == "pending" and got["b"].send_at == night


def test_threads_cooldown_and_approval_queue() -> None:
    policy = Policy.from_guardrails(Guardrails(), DeliverySettings(quiet_hours_start=0, quiet_hours_end=0))
    views = {"c": CustomerView(addresses={"email": "e"})}
    state = GuardrailState()
    t0 = START + timedelta(hours=10)
    first = _cand("c", "a", "normal", t0, condition="usage:drop", cooldown=timedelta(days=14))
    assert decide([first], views, policy, state)[0].status == "pending"
    # same episode again: already decided, no new decision (idempotent)
    assert decide([first], views, policy, state) == []
    # another playbook on the same condition episode threads into the first message
    other = _cand("c", "b", "normal", t0 + timedelta(hours=1), condition="usage:drop")
    assert decide([other], views, policy, state)[0].guardrail == "thread"
    # a new episode within the cooldown
    again = _cand(
        "c",
        "a",
        "normal",
        t0 + timedelta(days=3),
        condition="usage:drop",
        episode="e2",
        cooldown=timedelta(days=14),
    )
    assert decide([again], views, policy, state)[0].guardrail == "cooldown"
    unsure = _cand("c", "z", "normal", t0, confidence=0.2, min_confidence=0.5)
    held = decide([unsure], views, policy, state)[0]
    assert held.status == "held" and "approval" in held.reason
