"""Backtests: replay history day by day through the trip wires, the playbooks and the guardrails.

For each trip wire a playbook uses, every time it would have fired comes from its vectorised
``score_history``, part of every trip wire's protocol (point-in-time, as ``detect`` at each day's run).
Each day's run (at ``run_at`` UTC) decides that day's findings with
:func:`forewarn.decide.guardrails.decide`, the very function the live engine calls, with the guardrail state
carried from day to day. Incident notices (from the simulator's ground-truth outages) are counted in the same
fatigue budget.

Per playbook the report gives the messages that would have gone out, per-customer message rates, what each
guardrail stopped, and how good the targeting was:

- **precision**: the share of targeted customers who went on to have the problem: an inbound contact on the
  playbook's topic within ``horizon`` after the first targeting (observed), or, with ground truth, a true
  problem of the trip wire's kind within ``horizon`` either side (``precision_truth``);
- **recall**: the share of customers who contacted us on the topic (or had a true problem) who were targeted
  in the ``horizon`` before;
- **lead time**: the median days from the first targeting to the customer's first inbound contact about it
  (observed: on the topic; truth: a contact the simulator caused by a problem of that kind).

Targeted means the decision passed every guardrail: sent, deferred, or recorded as control or shadow ("would
have sent"), so holdouts and shadow playbooks are measured too.

>>> from datetime import date
>>> day_run(datetime(2026, 1, 5, 7, 30, tzinfo=UTC), time(9)).isoformat()
'2026-01-05T09:00:00+00:00'
>>> day_run(datetime(2026, 1, 5, 9, 30, tzinfo=UTC), time(9)).isoformat()
'2026-01-06T09:00:00+00:00'
"""

from __future__ import annotations

import json
import time as _time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import polars as pl

from forewarn.decide.candidates import first_per_episode, match, to_candidates
from forewarn.decide.engine import INCIDENT_NOTICES
from forewarn.decide.guardrails import CustomerView, Decision, GuardrailState, Policy, decide
from forewarn.decide.playbooks import KIND_TOPIC, OUTAGE_KIND, PlaybookSet
from forewarn.deliver.channels.base import addresses_of
from forewarn.detect.base import FINDINGS_SCHEMA, as_findings
from forewarn.detect.registry import load as load_wire
from forewarn.state.tickets import CaseHistory, idle_close

# which ground-truth event types each trip wire kind is about
KIND_TRUTH_TYPES: dict[str, tuple[str, ...]] = {
    "usage": ("usage_spike", "usage_drop", "level_shift", "went_silent"),
    "cadence": ("purchase_lapse", "contact_lapse"),
    "billing": ("bill_shock", "billing_error"),
    "devices": ("device_failure",),
    "schedule": ("renewal_due", "card_expiry", "maintenance", "shipment_delay"),
    "opportunity": ("near_limit",),
    OUTAGE_KIND: ("outage",),
}
TARGETED = ("pending", "deferred", "control", "shadow", "open")
SENT = ("pending", "deferred")
TS = pl.Datetime("us", "UTC")


def day_run(ts: datetime, run_at: time) -> datetime:
    """The first daily run (at ``run_at`` UTC) at or after ``ts``: when a finding at ``ts`` is decided."""
    run = datetime.combine(ts.date(), run_at, tzinfo=UTC)
    return run if run >= ts else run + timedelta(days=1)


# ---- the report ----


@dataclass
class PlaybookResult:
    name: str
    mode: str
    kind: str
    topic: str
    holdout: float
    decisions: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    suppressed_by: dict[str, int] = field(default_factory=dict)
    messages: int = 0  # notifications that would have gone out (sent/deferred; shadow ones for shadow mode)
    control: int = 0
    tasks: int = 0
    webhooks: int = 0
    customers_targeted: int = 0
    rate_p50: float = 0.0  # messages per customer-week, over weeks with at least one
    rate_p95: float = 0.0
    rate_max: int = 0
    precision: float | None = None
    recall: float | None = None
    lead_time_days: float | None = None
    precision_truth: float | None = None  # a true problem of the kind within the horizon either side
    # a contact the simulator caused by a problem of the kind, within the horizon after (what the observed
    # precision estimates from signals)
    precision_truth_contact: float | None = None
    deferred: int = 0
    recall_truth: float | None = None
    lead_time_truth_days: float | None = None
    contacted: int = 0  # targeted customers with a contact on the topic within the horizon (observed)
    contacted_truth: int = 0  # ... with a contact the simulator caused by a problem of the kind
    weekly: list[tuple[str, int]] = field(default_factory=list)  # (week start, messages)
    lead_times: list[float] = field(default_factory=list)  # observed, days


@dataclass
class BacktestReport:
    start: date
    end: date
    customers: int
    days: int
    playbooks: list[PlaybookResult]
    overall: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    horizon_days: float = 30.0
    # every decision (not serialised): playbook, customer_id, action, status, guardrail, at, send_at, ...
    decisions: pl.DataFrame | None = None
    # every trip wire firing by kind (not serialised): pass as ``reuse=`` to try other playbooks on it
    firings: dict[str, pl.DataFrame] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "customers": self.customers,
            "days": self.days,
            "horizon_days": self.horizon_days,
            "overall": self.overall,
            "playbooks": [
                {k: v for k, v in p.__dict__.items() if k not in ("lead_times",)} for p in self.playbooks
            ],
            "notes": self.notes,
            "timings": self.timings,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def to_text(self) -> str:
        from forewarn.measure.backtest_report import render_text

        return render_text(self)

    def to_html(self) -> str:
        from forewarn.measure.backtest_report import render_html

        return render_html(self)


# ---- inputs ----


def customer_views(
    customers: pl.DataFrame, consents: pl.DataFrame | None
) -> tuple[dict[str, CustomerView], dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Guardrail views, matching attributes and preferred channels from a customers frame.

    ``customers``: ``customer_id`` and any of ``timezone, email, phone, channels (list), segment, plan,
    region, attributes (dict or JSON)``; ``consents``: ``customer_id, channel, topic, granted``.
    """
    consent: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
    if consents is not None and consents.height:
        for cid, ch, topic, granted in consents.select(
            "customer_id", "channel", "topic", "granted"
        ).iter_rows():
            consent[cid][(ch, topic or "*")] = bool(granted)
    cols = set(customers.columns)
    views, attrs, prefs = {}, {}, {}
    for r in customers.iter_rows(named=True):
        cid = r["customer_id"]
        addresses = addresses_of(r)
        a = r.get("attributes") if "attributes" in cols else None
        if isinstance(a, str):
            a = json.loads(a or "{}")
        views[cid] = CustomerView(
            timezone=r.get("timezone") or "UTC", addresses=addresses, consent=consent[cid]
        )
        attrs[cid] = {
            "segment": r.get("segment"),
            "plan": r.get("plan"),
            "region": r.get("region"),
            "attributes": a or {},
        }
        prefs[cid] = list(r.get("channels") or [])
    return views, attrs, prefs


def _findings_for(
    kind: str,
    frames: Mapping[str, pl.DataFrame],
    context: Mapping[str, Any],
    runs: Sequence[datetime],
    params: Mapping[str, Any],
) -> tuple[pl.DataFrame, str]:
    wire = load_wire(kind, **params)
    data = {k: frames[k] for k in wire.kinds if k in frames}
    # part of the trip-wire protocol: wires that score at run times take ours (every day), the others score
    # every data row (``forewarn.detect.base.TripWire.score_history``)
    found = wire.score_history(data, runs=list(runs), **context)
    how = "score_history"
    return (as_findings(found) if found.height else pl.DataFrame(schema=FINDINGS_SCHEMA)), how


def _outage_findings(truth: pl.DataFrame) -> pl.DataFrame:
    """Ground-truth outages as ``outage`` findings: each affected customer from the time they were reached."""
    rows = []
    for r in truth.filter(pl.col("type") == "outage").iter_rows(named=True):
        for part in json.loads(r["affected"] or "[]"):
            added = datetime.fromisoformat(str(part["added_at"]).replace("Z", "+00:00"))
            for cid in part.get("customers", []):
                rows.append((cid, f"incident:{r['id']}", added))
    frame = pl.DataFrame(
        rows, schema={"customer_id": pl.String, "condition": pl.String, "ts": TS}, orient="row"
    )
    return frame.with_columns(
        kind=pl.lit(OUTAGE_KIND),
        score=pl.lit(1.0),
        confidence=pl.lit(1.0),
        severity=pl.lit("critical"),
        topic=pl.lit("outage"),
        explanation=pl.lit(""),
        evidence=pl.lit("{}"),
    ).select(list(FINDINGS_SCHEMA))


def _episodes(findings: pl.DataFrame, run_at: time, gap: timedelta) -> pl.DataFrame:
    """Add ``at`` (the run deciding each row) and ``episode`` (first ``at`` of an unbroken run of firings)."""
    if findings.height == 0:
        return findings.with_columns(at=pl.lit(None, TS), episode=pl.lit(None, TS))
    offset = f"{run_at.hour * 3600 + run_at.minute * 60 + run_at.second}s"
    day = pl.col("ts").dt.truncate("1d").dt.offset_by(offset)
    at = pl.when(day >= pl.col("ts")).then(day).otherwise(day.dt.offset_by("1d"))
    # incidents are decided as they are declared, not at the next daily run
    at = pl.when(pl.col("kind") == OUTAGE_KIND).then(pl.col("ts")).otherwise(at)
    keys = ["customer_id", "kind", "condition"]
    f = (
        findings.with_columns(at=at)
        .sort([*keys, "at", "score"], descending=[False, False, False, False, True])
        .unique([*keys, "at"], keep="first", maintain_order=True)
    )
    new = (pl.col("at") - pl.col("at").shift(1).over(keys)).fill_null(timedelta(days=10_000)) > gap
    return f.with_columns(episode=pl.when(new).then(pl.col("at"))).with_columns(
        episode=pl.col("episode").forward_fill().over(keys)
    )


# ---- the run ----


@dataclass
class BacktestData:
    """What a backtest replays: signal frames by kind (the whole history), customers, consents,
    dependencies and, from the simulator, the ground truth (all but ``frames`` and ``customers`` optional)."""

    frames: Mapping[str, pl.DataFrame]
    customers: pl.DataFrame
    consents: pl.DataFrame | None = None
    dependencies: pl.DataFrame | None = None
    truth: pl.DataFrame | None = None


def customers_from_records(records: Sequence[Mapping[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Customer records (``customers.jsonl``: id, timezone, email, phone, channels, segment, plan, region,
    attributes, consent ``{channel: {topic: bool}}``) -> (customers frame, consents frame)."""
    rows, consents = [], []
    for r in records:
        cid = str(r.get("id") or r.get("customer_id"))
        rows.append(
            {
                "customer_id": cid,
                "timezone": r.get("timezone") or "UTC",
                "email": r.get("email"),
                "phone": r.get("phone"),
                "channels": list(r.get("channels") or []),
                "segment": r.get("segment"),
                "plan": r.get("plan"),
                "region": r.get("region"),
                "attributes": json.dumps(r.get("attributes") or {}),
            }
        )
        for channel, topics in (r.get("consent") or {}).items():
            for topic, granted in (topics or {}).items():
                consents.append(
                    {"customer_id": cid, "channel": channel, "topic": topic, "granted": bool(granted)}
                )
    schema = {"customer_id": pl.String, "channel": pl.String, "topic": pl.String, "granted": pl.Boolean}
    return pl.DataFrame(rows), pl.DataFrame(consents, schema=schema)


def data_from_world(world: Any) -> BacktestData:
    """A simulated world (``forewarn.sim.world.simulate``) as backtest input, ground truth included."""
    customers, consents = customers_from_records([json.loads(line) for line in world.customer_lines])
    return BacktestData(dict(world.frames), customers, consents, world.dependencies, world.truth)


def data_from_ctx(ctx: Any, truth_path: Any = None, kinds: Sequence[str] | None = None) -> BacktestData:
    """Signals from ``ctx.signals``, customers, consents and dependencies from the state store."""
    from sqlalchemy import select

    from forewarn.signals.schema import KINDS
    from forewarn.state.models import Consent, Customer, Dependency

    frames = {k: ctx.signals.read(k) for k in (kinds or KINDS) if ctx.signals.count(k)}
    with ctx.engine.connect() as conn:
        custs = [
            {
                "id": r.id,
                "timezone": r.timezone,
                "email": r.email,
                "phone": r.phone,
                "channels": r.channels,
                "segment": r.segment,
                "plan": r.plan,
                "region": r.region,
                "attributes": r.attributes,
            }
            for r in conn.execute(select(Customer.__table__))
        ]
        cons = [
            tuple(r)
            for r in conn.execute(
                select(Consent.customer_id, Consent.channel, Consent.topic, Consent.granted)
            )
        ]
        deps = [
            tuple(r)
            for r in conn.execute(select(Dependency.customer_id, Dependency.service_id, Dependency.region))
        ]
    customers, _ = customers_from_records(custs)
    consents = pl.DataFrame(
        cons,
        schema={"customer_id": pl.String, "channel": pl.String, "topic": pl.String, "granted": pl.Boolean},
        orient="row",
    )
    dependencies = pl.DataFrame(
        deps, schema={"customer_id": pl.String, "service_id": pl.String, "region": pl.String}, orient="row"
    )
    truth = None
    if truth_path is not None:
        from forewarn.measure.truth import load

        truth = load(truth_path)
    return BacktestData(frames, customers, consents, dependencies, truth)


def backtest_world(
    world: Any,
    playbooks: PlaybookSet | str | Any,
    *,
    settings: Any,
    start: date | None = None,
    end: date | None = None,
    **options: Any,
) -> BacktestReport:
    """Backtest ``playbooks`` (a set, or a file / folder) on a simulated world, over its whole history by
    default (from its second day). ``options`` go to :func:`run_backtest`."""
    from forewarn.decide.playbooks import load_playbooks

    pset = playbooks if isinstance(playbooks, PlaybookSet) else load_playbooks(playbooks)
    data = data_from_world(world)
    stamps = [f["ts"] for f in data.frames.values() if f.height and "ts" in f.columns]
    first = min(s.min() for s in stamps).date()
    last = max(s.max() for s in stamps).date()
    return run_backtest(
        pset, data, start or first + timedelta(days=1), end or last, settings=settings, **options
    )


def signal_kinds(playbooks: PlaybookSet) -> list[str]:
    """The signal kinds a backtest of ``playbooks`` reads: their trip wires' kinds, inbound contacts and the
    status changes of the tickets they opened."""
    from importlib import import_module

    from forewarn.detect.registry import TRIP_WIRES

    kinds = {"contact", "ticket_update"}
    for p in playbooks.active():
        if p.when.kind in TRIP_WIRES:
            module, cls = TRIP_WIRES[p.when.kind].split(":")
            kinds.update(getattr(import_module(module), cls).kinds)
    return sorted(kinds)


def run_backtest(
    playbooks: PlaybookSet,
    data: BacktestData,
    start: date,
    end: date,
    *,
    settings: Any,
    run_at: time = time(9),
    horizon: timedelta = timedelta(days=30),
    case_idle: timedelta | None = None,
    wire_params: Mapping[str, Mapping[str, Any]] | None = None,
    detect_every: int = 1,
    reuse: Mapping[str, pl.DataFrame] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BacktestReport:
    """Replay ``start``..``end`` (inclusive days) and measure every playbook that is not ``off``.

    ``data.frames`` hold the whole history (trip wires look back on their own, point-in-time);
    ``settings``: quiet hours (``Settings`` or its ``delivery``) and the idle time that closes a case
    (``ticket_idle_close``; ``case_idle`` overrides it). A contact is an open ticket on its topic while its
    case is open (``forewarn.state.tickets``: the ``ticket_update`` history and the idle time, as live). Every
    trip wire scores its history with ``score_history``; ``detect_every`` only widens the gap (in days) that
    joins a condition's findings into one episode. ``reuse`` takes an earlier report's ``firings`` (same data,
    same trip wire parameters), so
    trying other playbooks and guardrails skips detection. ``progress`` is called with the name of each stage
    as it starts (a progress bar).
    """
    frames, customers, consents = data.frames, data.customers, data.consents
    dependencies, truth = data.dependencies, data.truth
    clock = _time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = []
    active = playbooks.active()
    runs = [
        datetime.combine(start + timedelta(days=i), run_at, tzinfo=UTC) for i in range((end - start).days + 1)
    ]
    lo, hi = runs[0] - timedelta(days=1), runs[-1]
    views, attrs, prefs = customer_views(customers, consents)
    cust_frame = customers.select(
        [c for c in ("customer_id", "plan", "region", "timezone", "segment") if c in customers.columns]
    )
    if "attributes" in customers.columns:
        a = customers["attributes"]
        cust_frame = cust_frame.with_columns(
            attributes=a if a.dtype == pl.String else pl.Series([json.dumps(x or {}) for x in a.to_list()])
        )
    context: dict[str, Any] = {"customers": cust_frame}
    if dependencies is not None:
        context["dependencies"] = dependencies

    # 1. findings over the whole period, per trip wire (or reused from an earlier report on the same data)
    parts = []
    firings: dict[str, pl.DataFrame] = {}
    for kind in sorted({p.when.kind for p in active}):
        t0 = _time.perf_counter()
        if progress is not None:
            progress(f"trip wire {kind}")
        if reuse is not None and kind in reuse:
            found, how = reuse[kind], "reused"
        elif kind == OUTAGE_KIND:
            if truth is None:
                notes.append("outage playbooks need incidents: pass the simulator's ground truth (--truth)")
                continue
            found, how = _outage_findings(truth), "ground-truth outages"
        else:
            params = (wire_params or {}).get(kind, {})
            found, how = _findings_for(kind, frames, context, runs, params)
        firings[kind] = found
        found = found.filter((pl.col("ts") > lo) & (pl.col("ts") <= hi))
        parts.append(found)
        timings[f"detect:{kind}"] = round(_time.perf_counter() - t0, 3)
        notes.append(f"{kind}: {found.height} firings ({how})")
    findings = pl.concat(parts) if parts else pl.DataFrame(schema=FINDINGS_SCHEMA)
    findings = _episodes(findings, run_at, gap=timedelta(days=max(1, detect_every), hours=1))

    # 2. candidates, the same way the live engine makes them
    if progress is not None:
        progress("playbooks and guardrails")
    t0 = _time.perf_counter()
    by_name = {p.name: p for p in active}
    matches = first_per_episode(match(findings, active, attrs))
    candidates = to_candidates(
        matches, by_name, min_confidence=playbooks.guardrails.min_confidence, preferred_channels=prefs
    )
    timings["candidates"] = round(_time.perf_counter() - t0, 3)

    # 3. day by day through the guardrails, one carried state
    t0 = _time.perf_counter()
    policy = Policy.from_guardrails(playbooks.guardrails, settings)
    state = GuardrailState()
    notices = _incident_notices(truth) if truth is not None else {}
    contacts = _contacts(frames)
    cases = CaseHistory.from_frames(contacts, frames.get("ticket_update"))
    idle = case_idle if case_idle is not None else idle_close(settings)
    timings["contacts"] = round(_time.perf_counter() - t0, 3)
    t0 = _time.perf_counter()
    by_day: dict[date, list] = defaultdict(list)
    for c in candidates:
        by_day[c.at.date()].append(c)
    decisions: list[Decision] = []
    for run in runs:
        for cid, condition, t in notices.get(run.date(), ()):
            state.record_send(cid, t)
            state.threads[(cid, condition, "*")] = INCIDENT_NOTICES
        batch = by_day.get(run.date(), [])
        if not batch:
            continue
        day_views = {}
        for c in batch:
            if c.customer_id not in day_views:
                base = views.get(c.customer_id, CustomerView())
                day_views[c.customer_id] = replace(
                    base, open_ticket_topics=cases.open_topics(c.customer_id, c.at, idle)
                )
        decisions += decide(batch, day_views, policy, state)
    timings["guardrails"] = round(_time.perf_counter() - t0, 3)

    # 4. measure
    t0 = _time.perf_counter()
    frame = _decision_frame(decisions)
    results = [_measure(p, frame, contacts, truth, start, end, horizon) for p in active]
    overall = _rates(frame.filter(pl.col("status").is_in(SENT) & (pl.col("action") == "notify")))
    overall["messages"] = int(
        frame.filter(pl.col("status").is_in(SENT) & (pl.col("action") == "notify")).height
    )
    timings["measure"] = round(_time.perf_counter() - t0, 3)
    timings["total"] = round(_time.perf_counter() - clock, 3)
    return BacktestReport(
        start=start,
        end=end,
        customers=customers.height,
        days=len(runs),
        playbooks=results,
        overall=overall,
        notes=notes,
        timings=timings,
        horizon_days=horizon.total_seconds() / 86400,
        decisions=frame,
        firings=firings,
    )


def _incident_notices(truth: pl.DataFrame) -> dict[date, list[tuple[str, str, datetime]]]:
    """Incident notices the incidents stage would have sent (one per affected customer), by day."""
    out: dict[date, list[tuple[str, str, datetime]]] = defaultdict(list)
    for r in _outage_findings(truth).iter_rows(named=True):
        out[r["ts"].date()].append((r["customer_id"], r["condition"], r["ts"]))
    return out


# Words that say what an untagged contact is about (support language, not tuned to any data set); the topic
# with the most hits wins, ties in this order. Contacts that already carry a topic keep it.
TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    topic: tuple(words.split("|"))
    for topic, words in {
        "outage": "outage|down|no internet|no signal|no service|offline|disconnected|no connection|"
        "cannot connect|can't connect|not working",
        "device": "router|modem|box|device|reboot|rebooting|restarting|dvr|hub|set-top|remote|hardware|disk|"
        "drive|died|broken|replace|recorder|receiver|decoder|handset|battery|screen|printer|laptop",
        "billing": "bill|billing|charge|charged|invoice|refund|payment|overcharged|fee|price|debit",
        "usage": "data|usage|allowance|gb|limit|used",
        "shipping": "delivery|shipment|parcel|package|courier|tracking|arrived",
        "account": "password|login|account|cancel|renewal|renew|contract|plan|card|upgrade|moving",
    }.items()
}


def topic_expr(text: pl.Expr) -> pl.Expr:
    """A vectorised topic guess for a text column: the topic whose words occur most (ties in table order)."""
    import re

    low = text.str.to_lowercase()
    counts = {
        topic: low.str.count_matches(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b").fill_null(0)
        for topic, words in TOPIC_WORDS.items()
    }
    best = pl.max_horizontal(list(counts.values()))
    out = pl.lit(None, pl.String)
    for topic in reversed(list(counts)):  # the first topic in table order wins a tie
        out = pl.when((counts[topic] == best) & (best > 0)).then(pl.lit(topic)).otherwise(out)
    return out


def infer_topic(text: str | None) -> str | None:
    """The topic an untagged contact's words point to, or ``None`` (one text; see :func:`topic_expr`).

    >>> infer_topic("My TV box keeps rebooting"), infer_topic("Why was I charged twice?"), infer_topic("hi")
    ('device', 'billing', None)
    """
    if not text:
        return None
    return pl.select(topic_expr(pl.lit(text))).item()


def _contacts(frames: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Inbound contacts with a topic: their own, else inferred from subject and text."""
    c = frames.get("contact")
    schema = {"customer_id": pl.String, "ts": TS, "topic": pl.String, "event_id": pl.String}
    if c is None or c.height == 0:
        return pl.DataFrame(schema=schema)
    cols = c.columns
    text = pl.concat_str(
        [pl.col(k).fill_null("") for k in ("subject", "text") if k in cols] or [pl.lit("")], separator=" "
    )
    given = pl.col("topic") if "topic" in cols else pl.lit(None, pl.String)
    c = c.with_columns(topic=pl.coalesce(given, topic_expr(text)))
    return c.select("customer_id", "ts", "topic", "event_id").filter(pl.col("topic").is_not_null()).sort("ts")


def _decision_frame(decisions: list[Decision]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "playbook": [d.candidate.playbook for d in decisions],
            "customer_id": [d.candidate.customer_id for d in decisions],
            "kind": [d.candidate.kind for d in decisions],
            "condition": [d.candidate.condition for d in decisions],
            "topic": [d.candidate.topic for d in decisions],
            "action": [d.candidate.action for d in decisions],
            "priority": [d.candidate.priority for d in decisions],
            "status": [d.status for d in decisions],
            "guardrail": [d.guardrail for d in decisions],
            "channel": [d.channel for d in decisions],
            "at": [d.candidate.at for d in decisions],
            "send_at": [d.send_at for d in decisions],
        },
        schema={
            "playbook": pl.String,
            "customer_id": pl.String,
            "kind": pl.String,
            "condition": pl.String,
            "topic": pl.String,
            "action": pl.String,
            "priority": pl.String,
            "status": pl.String,
            "guardrail": pl.String,
            "channel": pl.String,
            "at": TS,
            "send_at": TS,
        },
    )


def _rates(sent: pl.DataFrame) -> dict[str, Any]:
    """p50 / p95 / max messages per customer-week (ISO weeks with at least one message)."""
    if sent.height == 0:
        return {"rate_p50": 0.0, "rate_p95": 0.0, "rate_max": 0, "customers": 0}
    per = (
        sent.group_by("customer_id", pl.col("send_at").dt.truncate("1w").alias("week"))
        .len()["len"]
        .to_numpy()
    )
    return {
        "rate_p50": float(np.percentile(per, 50)),
        "rate_p95": float(np.percentile(per, 95)),
        "rate_max": int(per.max()),
        "customers": int(sent["customer_id"].n_unique()),
    }


def _measure(
    pb: Any,
    frame: pl.DataFrame,
    contacts: pl.DataFrame,
    truth: pl.DataFrame | None,
    start: date,
    end: date,
    horizon: timedelta,
) -> PlaybookResult:
    mine = frame.filter(pl.col("playbook") == pb.name)
    notify = mine.filter(pl.col("action") == "notify")
    statuses = dict(Counter(mine["status"].to_list()))
    stopped = mine.filter(~pl.col("status").is_in(["pending", "open", "deferred", "shadow"]))
    topic = pb.topic_for(KIND_TOPIC.get(pb.when.kind))
    out_status = ("shadow",) if pb.mode == "shadow" else SENT
    sent = notify.filter(pl.col("status").is_in(out_status)).with_columns(pl.col("send_at"))
    r = PlaybookResult(
        name=pb.name,
        mode=pb.mode,
        kind=pb.when.kind,
        topic=topic,
        holdout=pb.holdout,
        decisions=mine.height,
        statuses=statuses,
        suppressed_by=dict(Counter(stopped["guardrail"].drop_nulls().to_list())),
        messages=sent.height,
        control=int(notify.filter(pl.col("status") == "control").height),
        deferred=int(notify.filter(pl.col("status") == "deferred").height),
        tasks=int(mine.filter((pl.col("action") == "task") & pl.col("status").is_in(TARGETED)).height),
        webhooks=int(mine.filter((pl.col("action") == "webhook") & pl.col("status").is_in(TARGETED)).height),
    )
    rates = _rates(sent)
    r.rate_p50, r.rate_p95, r.rate_max = rates["rate_p50"], rates["rate_p95"], rates["rate_max"]
    r.weekly = [
        (w.date().isoformat(), int(n))
        for w, n in sent.group_by(pl.col("send_at").dt.truncate("1w").alias("w")).len().sort("w").iter_rows()
    ]
    targeted = mine.filter(pl.col("status").is_in(TARGETED)).group_by("customer_id").agg(t=pl.col("at").min())
    r.customers_targeted = targeted.height
    if targeted.height == 0:
        return r
    h = horizon
    lo = datetime.combine(start, time(0), tzinfo=UTC)
    hi = datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC)

    # observed: inbound contacts on the topic
    on_topic = contacts.filter(pl.col("topic") == topic).select("customer_id", pl.col("ts").alias("c"))
    after = targeted.join(on_topic, on="customer_id").filter(
        (pl.col("c") > pl.col("t")) & (pl.col("c") <= pl.col("t") + h)
    )
    first = after.group_by("customer_id").agg(lead=(pl.col("c").min() - pl.col("t").first()))
    r.precision = first.height / targeted.height
    r.contacted = first.height
    if first.height:
        days = (first["lead"].dt.total_seconds() / 86400).to_numpy()
        r.lead_time_days = float(np.median(days))
        r.lead_times = [round(float(x), 3) for x in days]
    firsts = (
        on_topic.filter((pl.col("c") >= lo) & (pl.col("c") < hi))
        .group_by("customer_id")
        .agg(c=pl.col("c").min())
    )
    if firsts.height:
        hit = firsts.join(
            mine.filter(pl.col("status").is_in(TARGETED)).select("customer_id", "at"), on="customer_id"
        )
        hit = hit.filter((pl.col("at") < pl.col("c")) & (pl.col("at") >= pl.col("c") - h))
        r.recall = hit["customer_id"].n_unique() / firsts.height

    # ground truth: true problems of the kind, and the contacts they caused
    if truth is not None:
        types = KIND_TRUTH_TYPES.get(pb.when.kind, ())
        problems = _truth_problems(truth, types)
        near = targeted.join(problems, on="customer_id").filter(
            (pl.col("p_start") <= pl.col("t") + h) & (pl.col("p_end") >= pl.col("t") - h)
        )
        r.precision_truth = near["customer_id"].n_unique() / targeted.height
        in_range = problems.filter((pl.col("p_start") >= lo) & (pl.col("p_start") < hi))
        if in_range.height:
            tgt = mine.filter(pl.col("status").is_in(TARGETED)).select("customer_id", "at")
            caught = in_range.join(tgt, on="customer_id").filter(
                (pl.col("at") >= pl.col("p_start") - h) & (pl.col("at") <= pl.col("p_end"))
            )
            r.recall_truth = caught["pid"].n_unique() / in_range["pid"].n_unique()
        caused = truth.filter(
            (pl.col("type") == "contact") & pl.col("cause").is_in(problems["pid"].implode())
        )
        cc = caused.select("customer_id", pl.col("start").alias("c"))
        lead = targeted.join(cc, on="customer_id").filter(
            (pl.col("c") > pl.col("t")) & (pl.col("c") <= pl.col("t") + h)
        )
        lead = lead.group_by("customer_id").agg(lead=(pl.col("c").min() - pl.col("t").first()))
        r.precision_truth_contact = lead.height / targeted.height
        r.contacted_truth = lead.height
        if lead.height:
            r.lead_time_truth_days = float(np.median((lead["lead"].dt.total_seconds() / 86400).to_numpy()))
    return r


def _truth_problems(truth: pl.DataFrame, types: Sequence[str]) -> pl.DataFrame:
    """(pid, customer_id, p_start, p_end) of true problems of ``types`` (outages: each affected customer)."""
    direct = truth.filter(pl.col("type").is_in(list(types)) & pl.col("customer_id").is_not_null()).select(
        pl.col("id").alias("pid"),
        "customer_id",
        pl.col("start").alias("p_start"),
        pl.coalesce("end", "start").alias("p_end"),
    )
    if "outage" not in types:
        return direct
    rows = []
    for r in truth.filter(pl.col("type") == "outage").iter_rows(named=True):
        for part in json.loads(r["affected"] or "[]"):
            for cid in part.get("customers", []):
                rows.append((r["id"], cid, r["start"], r["end"] or r["start"]))
    spread = pl.DataFrame(
        rows, schema={"pid": pl.String, "customer_id": pl.String, "p_start": TS, "p_end": TS}, orient="row"
    )
    return pl.concat([direct, spread])
