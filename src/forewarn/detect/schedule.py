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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from forewarn.detect.base import Params, as_findings, empty_findings, params_with, point_in_time
from forewarn.detect.history import TS, daily_runs, run_micros
from forewarn.timeutil import utc

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


DAY_US = 86_400_000_000
NO_END = np.iinfo(np.int64).max  # a row nothing replaces: current from its ts on
_MARK = "\x00per-run\x00"  # stands in for the one evidence figure that changes from run to run


def _split_json(evidence: dict[str, Any]) -> tuple[str, str]:
    """``_row``'s JSON of ``evidence`` split around the ``_MARK`` value, to be joined with a number per run.

    >>> _split_json({"a": 1, "days_left": _MARK})
    ('{"a": 1, "days_left": ', '}')
    """
    text = json.dumps(evidence, sort_keys=True, default=str)
    before, _, after = text.partition(json.dumps(_MARK))
    return before, after


def _with_shipment_columns(ships: pl.DataFrame) -> pl.DataFrame:
    """``ships`` with the optional ``status`` and ``carrier`` columns (null when the feed has none)."""
    missing = [
        pl.lit(None, dtype=pl.String()).alias(c) for c in ("status", "carrier") if c not in ships.columns
    ]
    return ships.with_columns(missing) if missing else ships


def _shipment_evidence(r: dict[str, Any], days_late: Any) -> dict[str, Any]:
    """A late shipment's evidence (``days_late`` a number, or ``_MARK`` for the per-run figure)."""
    expected = r["expected_date"]
    return {
        "shipment_id": r["shipment_id"],
        "status": r["status"],
        "carrier": r["carrier"],
        "promised_date": r["promised_date"].isoformat(),
        "expected_date": expected.isoformat() if expected else None,
        "days_late": days_late,
        "as_of_ts": r["ts"].isoformat(),
    }


def _spans(
    ts_us: np.ndarray,
    end_us: np.ndarray,
    first_day: np.ndarray,
    last_day: np.ndarray,
    runs_us: np.ndarray,
    run_day: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Run index range [lo, hi) per row: runs that see the row (``ts <= run``), not yet its successor
    (``run < end``; ``NO_END`` for none) and whose UTC day is within ``first_day..last_day`` (days since 1970)."""
    hi_end = np.searchsorted(runs_us, end_us, "left")
    lo = np.maximum(np.searchsorted(runs_us, ts_us, "left"), np.searchsorted(run_day, first_day, "left"))
    hi = np.minimum(hi_end, np.searchsorted(run_day, last_day, "right"))
    return lo.astype(np.int64), hi.astype(np.int64)


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
        self.params = params_with(ScheduleParams, "schedule", overrides)

    def history(self) -> dict[str, timedelta | None]:
        """Everything of both kinds: a subscription event is announced any time before its due date (a
        renewal a year ahead), and a shipment's latest row, however old, says whether it is late until
        ``shipment_stale_days`` after the promise; what counts is each event's latest row, not a time span.

        >>> ScheduleTripWire().history()
        {'subscription': None, 'shipment': None}
        """
        return {"subscription": None, "shipment": None}

    def detect(self, frames: Mapping[str, pl.DataFrame], as_of: datetime, **context: Any) -> pl.DataFrame:
        as_of = utc(as_of)
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

    def score_history(
        self,
        frames: Mapping[str, pl.DataFrame],
        *,
        runs: Sequence[datetime] | None = None,
        **context: Any,
    ) -> pl.DataFrame:
        """``detect`` at every run (default: daily at 09:00 UTC over the rows' span) in one pass, ``ts`` the run.

        A notice row is current for its (customer, event type, service) from its ``ts`` until a newer row for
        the same key is (or, for a renewal, until the customer's first cancellation at or after it), and fires
        at the runs of that span inside its lead window; a shipment row likewise until the shipment's next
        row, on the days it counts as late. Only those (row, run) pairs are expanded, never customers x runs;
        the days left (or late) is worked out per run, the rest of a finding once per row.

        >>> from datetime import UTC, date
        >>> subs = pl.DataFrame({"customer_id": ["c1"], "ts": [datetime(2026, 3, 1, tzinfo=UTC)],
        ...     "event_type": ["renewal_due"], "due_date": [date(2026, 3, 10)]})
        >>> runs = [datetime(2026, 3, d, 9, tzinfo=UTC) for d in (8, 9, 10, 11)]
        >>> for text in ScheduleTripWire().score_history({"subscription": subs}, runs=runs)["explanation"]:
        ...     print(text)
        Your subscription renews on 10 March 2026 (in 2 days).
        Your subscription renews on 10 March 2026 (tomorrow).
        Your subscription renews on 10 March 2026 (today).
        """
        runs = sorted(utc(r) for r in runs) if runs is not None else daily_runs(frames, self.kinds)
        if not runs:
            return empty_findings()
        runs_us = run_micros(runs)
        days = pl.DataFrame({"i": np.arange(len(runs), dtype=np.int64), "day": runs_us // DAY_US})
        parts = []
        subs = frames.get("subscription")
        if subs is not None and subs.height:
            parts.append(self._notice_history(subs, runs_us, days, context.get("dependencies")))
        ships = frames.get("shipment")
        if ships is not None and ships.height:
            parts.append(self._shipment_history(ships, runs_us, days))
        parts = [p for p in parts if p.height]
        if not parts:
            return empty_findings()
        stamps = pl.DataFrame({"i": days["i"], "ts": pl.Series(runs, dtype=TS)})
        out = pl.concat(parts).join(stamps, on="i").with_columns(kind=pl.lit(self.name))
        return as_findings(out).sort("ts", "customer_id", "condition", "evidence")

    def _notice_history(
        self, subs: pl.DataFrame, runs_us: np.ndarray, days: pl.DataFrame, dependencies: pl.DataFrame | None
    ) -> pl.DataFrame:
        p = self.params
        for col in ("service_id", "details", "plan_from", "plan_to"):
            if col not in subs.columns:
                subs = subs.with_columns(pl.lit(None, dtype=pl.String()).alias(col))
        lead = {"renewal_due": p.renewal_lead_days, "card_expiry": p.card_expiry_lead_days}
        lead |= {"plan_change": p.plan_change_lead_days, "maintenance": p.maintenance_lead_days}
        subs = subs.with_row_index("_row").with_columns(_us=pl.col("ts").dt.epoch("us"))
        cancelled = (
            subs.filter(pl.col("event_type") == "cancellation")
            .select("customer_id", _cancel=pl.col("_us"))
            .sort("_cancel")
        )
        notices = (
            subs.filter(
                pl.col("event_type").is_in(pl.Series(list(lead)).implode()), pl.col("due_date").is_not_null()
            )
            .sort("_us", "_row")  # as detect orders them: by time, then as they come in the data
            .with_columns(_next=pl.col("_us").shift(-1).over("customer_id", "event_type", "service_id"))
            .join_asof(
                cancelled,
                left_on="_us",
                right_on="_cancel",
                by="customer_id",
                strategy="forward",
                check_sortedness=False,  # sorted by _us above, so within every customer too
            )
            .with_columns(
                _end=pl.when(pl.col("event_type") == "renewal_due")
                .then(pl.min_horizontal("_next", "_cancel"))
                .otherwise(pl.col("_next")),
                _window=pl.col("event_type").replace_strict(lead, return_dtype=pl.Int64),
                _due=pl.col("due_date").cast(pl.Int64),
            )
        )
        lo, hi = _spans(
            notices["_us"].to_numpy(),
            notices["_end"].fill_null(NO_END).to_numpy(),
            (notices["_due"] - notices["_window"]).to_numpy(),
            notices["_due"].to_numpy(),
            runs_us,
            days["day"].to_numpy(),
        )
        notices = notices.with_columns(_lo=lo, _hi=hi).filter(pl.col("_hi") > pl.col("_lo"))
        rows: list[tuple[Any, ...]] = []
        cache: dict[tuple[Any, Any], set[str]] = {}
        for r in notices.iter_rows(named=True):
            details = _details(r["details"])
            audience = self._audience(r, details, dependencies, cache)
            if not audience:
                continue
            kind, window = r["event_type"], r["_window"]
            condition, before, after, evidence = self._notice_parts(r, details, window)
            ev_pre, ev_post = _split_json({**evidence, "days_left": _MARK})
            fixed = (condition, before, after, ev_pre, ev_post, NOTICE_SEVERITY[kind], NOTICE_TOPIC[kind])
            rows += [(c, *fixed, window, r["_due"], r["_lo"], r["_hi"]) for c in audience]
        if not rows:
            return pl.DataFrame()
        cols = ["customer_id", "condition", "before", "after", "ev_pre", "ev_post", "severity", "topic"]
        schema = dict.fromkeys(cols, pl.String()) | dict.fromkeys(["window", "due", "lo", "hi"], pl.Int64())
        d = pl.col("due") - pl.col("day")
        in_days = (
            pl.when(d == 0)
            .then(pl.lit("today"))
            .when(d == 1)
            .then(pl.lit("tomorrow"))
            .otherwise(pl.concat_str(pl.lit("in "), d.cast(pl.String), pl.lit(" days")))
        )
        return (
            pl.DataFrame(rows, schema=schema, orient="row")
            .with_columns(i=pl.int_ranges("lo", "hi", dtype=pl.Int64))
            .explode("i")
            .join(days, on="i")
            .select(
                "i",
                "customer_id",
                "condition",
                score=1.0 - d.cast(pl.Float64) / (pl.col("window").cast(pl.Float64) + 1.0),
                confidence=pl.lit(1.0),
                severity="severity",
                topic="topic",
                explanation=pl.concat_str("before", in_days, "after"),
                evidence=pl.concat_str("ev_pre", d.cast(pl.String), "ev_post"),
            )
        )

    def _shipment_history(self, ships: pl.DataFrame, runs_us: np.ndarray, days: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        ships = (
            _with_shipment_columns(ships)
            .with_row_index("_row")
            .with_columns(_us=pl.col("ts").dt.epoch("us"))
            .sort("_us", "_row")
            .with_columns(_next=pl.col("_us").shift(-1).over("shipment_id"))
        )
        grace = timedelta(days=p.shipment_grace_days)
        epoch = date(1970, 1, 1)
        rows: list[tuple[Any, ...]] = []
        for r in ships.iter_rows(named=True):
            status, promised, expected = r["status"], r["promised_date"], r["expected_date"]
            if status == "delivered":
                continue
            pushed = expected is not None and expected > promised + grace
            lost = status == "lost"
            prom = (promised - epoch).days
            # late from its first day if pushed back or lost, else once the promise (and grace) has passed
            first = -(2**62) if pushed or lost else prom + p.shipment_grace_days + 1
            evidence = _shipment_evidence(r, _MARK)
            rows.append(
                (
                    r["customer_id"],
                    f"schedule:shipment_late:{r['shipment_id']}",
                    0.9 if pushed or lost else 0.6,
                    "critical" if lost else "warning",
                    self._shipment_text(r, ahead=True) if pushed else "",
                    self._shipment_text(r, ahead=False),
                    *_split_json(evidence),
                    (expected - epoch).days if pushed else -(2**62),  # the "expected on" wording until then
                    (expected - promised).days if expected else 0,
                    prom,
                    r["_us"],
                    r["_next"],
                    first,
                    prom + p.shipment_stale_days,
                )
            )
        if not rows:
            return pl.DataFrame()
        strings = [
            "customer_id",
            "condition",
            "confidence",
            "severity",
            "text_ahead",
            "text",
            "ev_pre",
            "ev_post",
        ]
        ints = ["ahead_until", "pushed_by", "promised", "us", "next", "first", "last"]
        schema = (
            dict.fromkeys(strings, pl.String())
            | {"confidence": pl.Float64()}
            | dict.fromkeys(ints, pl.Int64())
        )
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        lo, hi = _spans(
            frame["us"].to_numpy(),
            frame["next"].fill_null(NO_END).to_numpy(),
            frame["first"].to_numpy(),
            frame["last"].to_numpy(),
            runs_us,
            days["day"].to_numpy(),
        )
        late = pl.max_horizontal("pushed_by", pl.col("day") - pl.col("promised"), pl.lit(0, dtype=pl.Int64))
        return (
            frame.with_columns(lo=lo, hi=hi)
            .filter(pl.col("hi") > pl.col("lo"))
            .with_columns(i=pl.int_ranges("lo", "hi", dtype=pl.Int64))
            .explode("i")
            .join(days, on="i")
            .select(
                "i",
                "customer_id",
                "condition",
                score=late.cast(pl.Float64),
                confidence="confidence",
                severity="severity",
                topic=pl.lit("shipping"),
                explanation=pl.when(pl.col("day") <= pl.col("ahead_until"))
                .then(pl.col("text_ahead"))
                .otherwise(pl.col("text")),
                evidence=pl.concat_str("ev_pre", late.cast(pl.String), "ev_post"),
            )
        )

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
            .sort("ts", maintain_order=True)  # rows known at the same time: the later one in the data wins
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
        self,
        r: dict[str, Any],
        details: dict[str, Any],
        dependencies: pl.DataFrame | None,
        cache: dict[tuple[Any, Any], set[str]] | None = None,
    ) -> list[str]:
        """Who a notice is for: the row's customer, or for maintenance the dependents of the service.

        ``cache`` keeps each (service, region)'s dependents across calls on the same ``dependencies``.
        """
        if r["event_type"] != "maintenance" or r["service_id"] is None:
            return [] if r["customer_id"] == self.params.broadcast_customer else [r["customer_id"]]
        if dependencies is None:
            return [] if r["customer_id"] == self.params.broadcast_customer else [r["customer_id"]]
        region = details.get("region")
        key = (r["service_id"], region)
        users = cache.get(key) if cache is not None else None
        if users is None:
            deps = dependencies.filter(pl.col("service_id") == r["service_id"])
            if region and region != "*":
                deps = deps.filter(pl.col("region").is_in([region, "*"]))
            users = set(deps["customer_id"].to_list())
            if cache is not None:
                cache[key] = users
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
        kind = r["event_type"]
        condition, before, after, evidence = self._notice_parts(r, details, window)
        return self._row(
            customer_id,
            condition,
            as_of,
            score=1.0 - days_left / (window + 1.0),  # nearer -> higher
            confidence=1.0,
            severity=NOTICE_SEVERITY[kind],
            topic=NOTICE_TOPIC[kind],
            explanation=before + _in_days(days_left) + after,
            evidence={**evidence, "days_left": days_left},
        )

    def _notice_parts(
        self, r: dict[str, Any], details: dict[str, Any], window: int
    ) -> tuple[str, str, str, dict[str, Any]]:
        """A notice row's condition, its explanation before and after the days-left phrase ("in 3 days"),
        and its evidence without ``days_left``: the parts that stay the same from run to run."""
        kind, due = r["event_type"], r["due_date"]
        when = f"{long_date(due)} ("
        if kind == "renewal_due":
            plan = r["plan_to"] or r["plan_from"]
            before, after = f"Your {plan + ' ' if plan else ''}subscription renews on {when}", ")."
            condition = f"schedule:renewal_due:{due.isoformat()}"
        elif kind == "card_expiry":
            before = f"The card on your account expires on {when}"
            after = "); please update it before then so your service is not interrupted."
            condition = f"schedule:card_expiry:{due.isoformat()}"
        elif kind == "plan_change":
            old, new = r["plan_from"], r["plan_to"]
            if old and new and old != new:
                before = f"Your plan changes from {old} to {new} on {when}"
            else:
                before = f"Your {(new or old) + ' ' if new or old else ''}plan changes on {when}"
            after = ")" + (f": {details['text']}." if details.get("text") else ".")
            condition = f"schedule:plan_change:{due.isoformat()}"
        else:
            slot = f" at {details['window']}" if details.get("window") else ""
            note = f" ({details['text']})" if details.get("text") else ""
            before = f"Planned maintenance on {r['service_id']} on {long_date(due)}{slot} ("
            after = f") may briefly interrupt your service{note}."
            condition = f"schedule:maintenance:{r['service_id']}:{due.isoformat()}"
        evidence = {
            "event_type": kind,
            "due_date": due.isoformat(),
            "lead_days": window,
            "service_id": r["service_id"],
            "notice_ts": r["ts"].isoformat(),
            "details": details or None,
        }
        return condition, before, after, evidence

    # -- shipments -----------------------------------------------------------------------------------------

    def _shipments(self, ships: pl.DataFrame, as_of: datetime) -> list[dict[str, Any]]:
        p = self.params
        today = as_of.date()
        latest = (
            _with_shipment_columns(ships)
            .sort("ts", maintain_order=True)
            .unique("shipment_id", keep="last", maintain_order=True)
            .sort("shipment_id")
        )
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
            text = self._shipment_text(r, ahead=pushed and expected >= today)
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
                    evidence=_shipment_evidence(r, late_days),
                )
            )
        return rows

    @staticmethod
    def _shipment_text(r: dict[str, Any], *, ahead: bool) -> str:
        """The explanation for a late shipment; ``ahead``: pushed back to an expected date not yet passed."""
        if r["status"] == "lost":
            return f"Your order {r['shipment_id']} appears to be lost in transit; we are looking into it."
        if ahead:
            promised, expected = r["promised_date"], r["expected_date"]
            return (
                f"Your order {r['shipment_id']} is now expected on {long_date(expected)}, "
                f"{(expected - promised).days} days later than the {long_date(promised)} we promised."
            )
        carrier = r["carrier"] or "the carrier"
        return (
            f"Your order {r['shipment_id']} was due on {long_date(r['promised_date'])} and has not arrived "
            f"yet; we are checking with {carrier}."
        )
