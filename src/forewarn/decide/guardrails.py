"""Guardrails: one function turns candidate actions into decisions, for live runs and backtests alike.

``decide(candidates, customers, policy, state)`` does no I/O. The live engine fills ``state`` from the outbox
(the single record of what was sent, incident notices included) and writes the decisions back to it; the
backtest carries ``state`` from day to day. Both call this same function.

Checks, in order, for a message to a customer (``notify``):

1. an episode (one finding condition, first seen at one time) is decided once per playbook and action;
2. expired (the finding is older than the playbook's expiry): ``suppressed``;
3. confidence below the minimum: ``held`` (the approval queue);
4. an open ticket on the same topic: ``suppressed``;
5. the condition's thread already has a message from another playbook: ``suppressed`` (one per condition);
6. the playbook's cooldown for this customer: ``suppressed``;
7. consent per channel and topic (the first consented channel with an address), none: ``suppressed``;
8. quiet hours in the customer's time zone: ``deferred`` to their end (critical may override);
9. the fatigue budget (by priority) at the send time: ``suppressed`` (dropped, or folded into a digest);
10. control group (stable hash): ``control`` ("would have sent");
11. shadow mode: ``shadow``;
12. otherwise ``pending`` (or ``deferred``), counted in the budget.

Tasks and webhooks are not messages to the customer: they skip 4-9 and the budget (tasks are ``open`` for a
person to do; webhooks are ``pending`` for the worker to call).

>>> from datetime import datetime, UTC
>>> from dataclasses import replace
>>> quiet = DeliverySettings(quiet_hours_start=21, quiet_hours_end=8)
>>> pol = Policy.from_guardrails(Guardrails(), quiet=quiet)
>>> cust = {"c1": CustomerView(timezone="UTC", addresses={"email": "a@example.com"})}
>>> cand = Candidate(customer_id="c1", playbook="p", mode="live", action="notify", kind="usage",
...                  condition="usage:drop", topic="usage", priority="normal", channels=("email",),
...                  at=datetime(2026, 1, 5, 12, tzinfo=UTC), episode="e1", confidence=0.9, score=4.0)
>>> [(d.status, d.channel) for d in decide([cand], cust, pol, GuardrailState())]
[('pending', 'email')]
>>> late = replace(cand, episode="e2", at=datetime(2026, 1, 5, 23, tzinfo=UTC))
>>> d = decide([late], cust, pol, GuardrailState())[0]
>>> d.status, d.send_at.hour
('deferred', 8)
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from forewarn.config import DeliverySettings
from forewarn.decide.control import in_control
from forewarn.decide.playbooks import OUTAGE_KIND, PRIORITY_RANK, Budget, Guardrails
from forewarn.deliver import consent
from forewarn.deliver.channels.base import channel_spec
from forewarn.deliver.quiet_hours import next_allowed

# statuses that mean "the customer gets (or got) this message": they count against the fatigue budget
COUNTED = frozenset({"pending", "sending", "sent", "deferred", "failed"})
# statuses a decision can take
STATUSES = ("pending", "deferred", "suppressed", "held", "shadow", "control", "open")
# guardrail categories (for reports)
GUARDRAILS = (
    "expired",
    "confidence",
    "open_ticket",
    "thread",
    "cooldown",
    "consent",
    "budget",
    "quiet_hours",
    "control",
    "shadow",
)
CUSTOMER_FACING = "notify"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One action a playbook wants to take for one finding (or incident) about one customer."""

    customer_id: str
    playbook: str
    mode: str  # live | shadow (off never becomes a candidate)
    action: str  # notify | task | webhook
    kind: str
    condition: str
    topic: str
    priority: str
    channels: tuple[str, ...]
    at: datetime  # when the decision is taken (aware UTC)
    episode: str  # identifies the finding episode: the condition's first detection time
    confidence: float
    score: float
    min_confidence: float = 0.0
    holdout: float = 0.0
    cooldown: timedelta = timedelta(0)
    expires_at: datetime | None = None
    action_index: int = 0
    ref: Any = None  # opaque to the guardrails: the finding row, incident id...

    @property
    def thread_key(self) -> str:
        """One thread per customer per condition (``incident:7:C1`` for incidents, as the notices use)."""
        return f"{self.condition}:{self.customer_id}"

    @property
    def decision_key(self) -> tuple[str, str, str, str, int]:
        return (self.playbook, self.customer_id, self.condition, self.episode, self.action_index)


@dataclass(frozen=True, slots=True)
class CustomerView:
    """What the guardrails need to know about a customer."""

    timezone: str = "UTC"
    # usable channels -> address (None for channels that need none, such as console); missing: unusable
    addresses: Mapping[str, str | None] = field(default_factory=dict)
    # (channel, topic) -> granted; topic "*" covers topics without their own row
    consent: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    open_ticket_topics: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Policy:
    budget: Budget
    min_confidence: float
    explicit_consent_topics: frozenset[str]
    critical_overrides_quiet_hours: bool
    quiet: DeliverySettings

    @classmethod
    def from_guardrails(cls, g: Guardrails, quiet: Any) -> Policy:
        """``quiet`` is the ``Settings`` or its ``delivery`` part (quiet hours window, critical override)."""
        delivery = getattr(quiet, "delivery", quiet)
        override = g.critical_overrides_quiet_hours
        explicit = g.explicit_consent_topics
        return cls(
            budget=g.budget,
            min_confidence=g.min_confidence,
            explicit_consent_topics=frozenset(
                consent.explicit_topics(delivery) if explicit is None else explicit
            ),
            critical_overrides_quiet_hours=delivery.critical_overrides_quiet_hours
            if override is None
            else override,
            quiet=delivery,
        )


@dataclass(slots=True)
class Decision:
    candidate: Candidate
    status: str
    reason: str | None
    guardrail: str | None  # which guardrail decided, for reports; None when it goes out
    channel: str | None
    address: str | None
    send_at: datetime

    @property
    def would_send(self) -> bool:
        """Passed every guardrail (sent, or recorded as control / shadow "would have sent")."""
        return self.status in ("pending", "deferred", "control", "shadow", "open")


@dataclass
class GuardrailState:
    """What earlier decisions left behind; ``decide`` reads and updates it (no I/O)."""

    # customer -> sorted send times of customer-facing messages that count against the budget
    sent: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    # decision keys already decided (an episode is decided once; mirrors the outbox idempotency key)
    decided: set[tuple[str, str, str, str, int]] = field(default_factory=set)
    # (customer, condition, episode or "*" for every episode) -> playbook (or "incident-notices") that
    # messaged about it, or would have
    threads: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # (playbook, customer) -> last time that playbook messaged (or would have) this customer
    last_sent: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def count(self, customer_id: str, at: datetime, window: timedelta) -> int:
        """Messages within ``window`` either side of ``at``: if this stays below the cap, every window of that
        length that contains ``at`` does too (the check is conservative for messages scheduled ahead)."""
        times = self.sent.get(customer_id)
        if not times:
            return 0
        lo = bisect.bisect_right(times, at - window)
        hi = bisect.bisect_left(times, at + window)
        return hi - lo

    def record_send(self, customer_id: str, at: datetime) -> None:
        bisect.insort(self.sent[customer_id], at)


def _consented(view: CustomerView, channel: str, topic: str, explicit: frozenset[str]) -> bool:
    spec = channel_spec(channel)
    return (spec is not None and not spec.needs_consent) or consent.allows(
        view.consent, channel, topic, explicit
    )


def _order(c: Candidate) -> tuple[Any, ...]:
    return (c.at, PRIORITY_RANK.get(c.priority, 9), -c.score, c.customer_id, c.playbook, c.action_index)


def decide(
    candidates: Iterable[Candidate],
    customers: Mapping[str, CustomerView],
    policy: Policy,
    state: GuardrailState,
) -> list[Decision]:
    """Decide every candidate, most urgent first within the same time; updates ``state``.

    Already decided episodes produce no decision (re-running is a no-op). Every other candidate gets exactly
    one decision, and every decision that does not go out carries a reason.
    """
    out: list[Decision] = []
    budget = policy.budget
    for c in sorted(candidates, key=_order):
        key = c.decision_key
        if key in state.decided:
            continue
        state.decided.add(key)
        out.append(_decide_one(c, customers.get(c.customer_id) or CustomerView(), policy, budget, state))
    return out


def hold_mass_sends(
    decisions: list[Decision], known_customers: int, share: float, minimum: int
) -> list[Decision]:
    """The circuit breaker of a live run: a playbook whose decisions would message more than ``share`` of
    ``known_customers`` (and more than ``minimum``) goes to the approval queue (``held``) as a whole.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 3, 1, tzinfo=UTC)
    >>> c = lambda i: Candidate(f"c{i}", "p", "live", "notify", "usage", "usage:silent", "usage", "normal",
    ...                         ("email",), t, "e1", 1.0, 1.0)
    >>> ds = [Decision(c(i), "pending", None, None, "email", None, t) for i in range(60)]
    >>> {d.status for d in hold_mass_sends(ds, known_customers=1000, share=0.05, minimum=50)}
    {'held'}
    >>> {d.status for d in hold_mass_sends(ds, known_customers=10_000, share=0.05, minimum=50)}
    {'pending'}
    """
    limit = max(minimum, int(share * known_customers))
    going: dict[str, int] = defaultdict(int)
    for d in decisions:
        if _messages_customer(d):
            going[d.candidate.playbook] += 1
    tripped = {name: n for name, n in going.items() if n > limit}
    if not tripped:
        return decisions
    out = []
    for d in decisions:
        n = tripped.get(d.candidate.playbook)
        if n is not None and _messages_customer(d):
            reason = (
                f"circuit breaker: playbook {d.candidate.playbook!r} would message {n} customers in one run "
                f"(limit {limit}): awaiting approval"
            )
            d = Decision(d.candidate, "held", reason, "mass_send", d.channel, d.address, d.send_at)
        out.append(d)
    return out


def _messages_customer(d: Decision) -> bool:
    """A proactive message on its way to a customer (not a task, a webhook or an outage notice)."""
    c = d.candidate
    return d.status in ("pending", "deferred") and c.action == "notify" and c.kind != OUTAGE_KIND


def _decide_one(
    c: Candidate, view: CustomerView, policy: Policy, budget: Budget, state: GuardrailState
) -> Decision:
    def stop(
        status: str, guardrail: str, reason: str, channel: str | None = None, at: datetime = c.at
    ) -> Decision:
        return Decision(c, status, reason, guardrail, channel, None, at)

    if c.expires_at is not None and c.at > c.expires_at:
        return stop(
            "suppressed",
            "expired",
            f"expired: finding older than the playbook's expiry ({c.expires_at:%Y-%m-%d %H:%M} UTC)",
        )
    threshold = max(c.min_confidence, 0.0)
    if c.confidence < threshold:
        return stop(
            "held", "confidence", f"confidence {c.confidence:.2f} below {threshold:.2f}: awaiting approval"
        )

    if c.action != CUSTOMER_FACING:
        if c.holdout > 0 and in_control(c.customer_id, c.playbook, c.holdout):
            return stop(
                "control", "control", f"control group ({c.holdout:.0%} holdout): would have {c.action}ed"
            )
        if c.mode == "shadow":
            return stop("shadow", "shadow", f"shadow mode: would have created a {c.action}")
        return Decision(c, "open" if c.action == "task" else "pending", None, None, c.action, None, c.at)

    if c.topic in view.open_ticket_topics:
        return stop("suppressed", "open_ticket", f"open ticket on topic {c.topic!r}")
    thread = (c.customer_id, c.condition, c.episode)
    other = state.threads.get(thread) or state.threads.get((c.customer_id, c.condition, "*"))
    if other is not None and other != c.playbook:
        return stop(
            "suppressed", "thread", f"thread {c.thread_key!r} already has a message from playbook {other!r}"
        )
    last = state.last_sent.get((c.playbook, c.customer_id))
    if last is not None and c.cooldown and c.at < last + c.cooldown:
        return stop(
            "suppressed",
            "cooldown",
            f"cooldown: last message from this playbook at {last:%Y-%m-%d %H:%M} UTC",
        )

    channel = address = None
    for ch in c.channels:
        if ch in view.addresses and _consented(view, ch, c.topic, policy.explicit_consent_topics):
            channel, address = ch, view.addresses[ch]
            break
    if channel is None:
        return stop(
            "suppressed",
            "consent",
            f"no consent with an address for topic {c.topic!r} on {', '.join(c.channels)}",
        )

    send_at = c.at
    deferred = None
    if not (c.priority == "critical" and policy.critical_overrides_quiet_hours):
        resume = next_allowed(c.at, view.timezone, policy.quiet)
        if resume is not None:
            send_at = resume
            deferred = f"deferred: quiet hours in {view.timezone} until {resume:%Y-%m-%d %H:%M} UTC"
            if c.expires_at is not None and send_at > c.expires_at:
                return stop("suppressed", "expired", "expired before quiet hours end", channel)

    used = state.count(c.customer_id, send_at, budget.window)
    limit = budget.limit(c.priority)
    if used >= limit:
        fold = budget.overflow == "digest" and c.priority != "critical"
        what = "folded into the digest" if fold else "dropped"
        return Decision(
            c,
            "suppressed",
            f"fatigue budget: {used} message{'' if used == 1 else 's'} within {budget.window.days}d, limit {limit} for "
            f"{c.priority} priority; {what}",
            "budget",
            channel,
            address,
            send_at,
        )

    state.threads[thread] = c.playbook
    state.last_sent[(c.playbook, c.customer_id)] = send_at
    if c.holdout > 0 and in_control(c.customer_id, c.playbook, c.holdout):
        return Decision(
            c,
            "control",
            f"control group ({c.holdout:.0%} holdout): would have sent",
            "control",
            channel,
            address,
            send_at,
        )
    if c.mode == "shadow":
        return Decision(c, "shadow", "shadow mode: would have sent", "shadow", channel, address, send_at)
    state.record_send(c.customer_id, send_at)
    if deferred:
        return Decision(c, "deferred", deferred, "quiet_hours", channel, address, send_at)
    return Decision(c, "pending", None, None, channel, address, send_at)
