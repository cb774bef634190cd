"""Outcome metrics: is proactive service working? Computed for any period and customer segment.

Every number comes from SQL aggregates over the state store (tickets are the inbound contacts, the outbox
holds every notice and every guardrail decision) so the same code answers on SQLite and PostgreSQL and
never loops over rows in Python. Survey answers (CSAT, CES) and churn (subscription cancellations) live in
the signal store and are aggregated with Polars.

Definitions (all times UTC, a period is ``[start, end)``):

- *contacts*: tickets opened in the period; *per 1,000*: contacts x 1000 / customers in the segment.
- *avoidable*: a contact linked to an incident or a finding forewarn knew about. *After notice* when a notice
  about that same incident/finding had been sent to that customer by the time they got in touch.
- *repeat*: a contact with an earlier contact by the same customer on the same topic at most 7 days before.
- *time to notify*: per incident started in the period, its start to its first sent notice.
- *lead time*: per notice sent in the period, sent time to the first later contact by that customer about the
  same incident/finding (the contact it anticipated).
- *delivery*: outbox rows created in the period by status; success = sent / (sent + dead).
- *suppressions*: guardrail decisions (suppressed, deferred, held, control, shadow) by status and reason.
- *control groups*: per playbook, customers the playbook decided to notify (intention to treat) against
  the held-out control (status ``control``): contact rate, churn and CES within ``window_days`` after the
  decision, with 95% intervals (Wilson; Newcombe for the difference; normal for means).

>>> import tempfile
>>> from forewarn.state.db import upgrade, open_store
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
>>> upgrade(url)
>>> m = outcome_metrics(open_store(url), Period.parse("2026-01-01", "2026-02-01"))
>>> m["contacts"]["total"], m["notices"]["sent"]
(0, 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import polars as pl
import sqlalchemy as sa

from forewarn.measure.sql import bucket, percentiles, seconds_between
from forewarn.measure.stats import mean_ci, newcombe_diff, wilson
from forewarn.state.models import Customer, Incident, OutboxMessage, Ticket
from forewarn.timeutil import parse_time, utc

customers_t = Customer.__table__
tickets_t = Ticket.__table__
outbox_t = OutboxMessage.__table__
incidents_t = Incident.__table__

# Outbox statuses that are decisions not to deliver (now), each with a reason.
GUARDRAIL_STATUSES = ("suppressed", "deferred", "held", "control", "shadow")
# Outbox statuses that mean "the playbook decided to notify" (intention to treat).
TREATED_STATUSES = ("pending", "sending", "sent", "failed", "dead")
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "dead")
REPEAT_WINDOW_S = 7 * 86400


class SignalReader(Protocol):
    def read(
        self, kind: str, *, start: Any = None, end: Any = None, customers: Any = None
    ) -> pl.DataFrame: ...


def _as_utc(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        return parse_time(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return utc(value)


@dataclass(frozen=True)
class Period:
    """A half-open UTC interval ``[start, end)`` and an optional customer segment.

    >>> p = Period.parse("2026-01-01", "2026-01-08", segment="smb")
    >>> p.days, p.segment
    (7.0, 'smb')
    """

    start: datetime
    end: datetime
    segment: str | None = None

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(
                f"period end {self.end.isoformat()} must be after start {self.start.isoformat()}"
            )

    @classmethod
    def parse(
        cls, start: datetime | date | str, end: datetime | date | str, segment: str | None = None
    ) -> Period:
        """Build from ISO strings, dates or datetimes (naive means UTC)."""
        return cls(_as_utc(start), _as_utc(end), segment or None)

    @classmethod
    def last(cls, days: int, *, now: datetime | None = None, segment: str | None = None) -> Period:
        """The ``days`` whole UTC days up to and including today."""
        now = _as_utc(now or datetime.now(UTC))
        end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        return cls(end - timedelta(days=days), end, segment or None)

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


def _dialect(conn: sa.Connection) -> str:
    return conn.dialect.name


def _in_segment(customer_col: Any, segment: str | None) -> Any:
    if segment is None:
        return sa.true()
    return customer_col.in_(sa.select(customers_t.c.id).where(customers_t.c.segment == segment))


def _in_period(col: Any, period: Period) -> Any:
    return sa.and_(col >= period.start, col < period.end)


def _status_expr(o: sa.Table) -> Any:
    """The outbox status through an expression, where a query is bounded by a period.

    SQLite plans without statistics and would otherwise walk every row with that status (all sent messages
    ever) instead of the period's covering index; PostgreSQL plans from statistics either way.
    """
    return sa.func.coalesce(o.c.status, "")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _dense(period: Period, size: str, counts: dict[str, int]) -> dict[str, int]:
    """Every day (or Monday-started week) of the period in order, zero where nothing happened.

    >>> _dense(Period.parse("2026-03-01", "2026-03-04"), "day", {"2026-03-02": 5})
    {'2026-03-01': 0, '2026-03-02': 5, '2026-03-03': 0}
    """
    day = period.start.date()
    step = timedelta(days=1 if size == "day" else 7)
    if size == "week":
        day -= timedelta(days=day.weekday())
    last = period.end - timedelta(microseconds=1)  # the end is exclusive
    out: dict[str, int] = {}
    while day <= last.date():
        out[day.isoformat()] = counts.get(day.isoformat(), 0)
        day += step
    return out


def customer_count(conn: sa.Connection, segment: str | None = None) -> int:
    """Customers in ``segment`` (all customers when None)."""
    q = sa.select(sa.func.count()).select_from(customers_t)
    if segment is not None:
        q = q.where(customers_t.c.segment == segment)
    return int(conn.execute(q).scalar_one())


def contacts(conn: sa.Connection, period: Period, *, size: str = "day") -> dict[str, Any]:
    """Inbound contacts in the period: total, per 1,000 customers, and a series per day or week."""
    t = tickets_t
    n_customers = customer_count(conn, period.segment)
    where = sa.and_(_in_period(t.c.opened_at, period), _in_segment(t.c.customer_id, period.segment))
    b = bucket(t.c.opened_at, _dialect(conn), size).label("bucket")
    rows = conn.execute(sa.select(b, sa.func.count().label("n")).where(where).group_by(b).order_by(b)).all()
    counts = _dense(period, size, {str(r.bucket): int(r.n) for r in rows})
    total = sum(counts.values())

    def per_1000(n: int) -> float | None:
        return round(n * 1000 / n_customers, 3) if n_customers else None

    return {
        "customers": n_customers,
        "total": total,
        "per_1000": per_1000(total),
        "bucket": size,
        "series": [{"bucket": b, "contacts": n, "per_1000": per_1000(n)} for b, n in counts.items()],
    }


def _notified_before(t: Any) -> Any:
    """A sent notice about the ticket's incident or finding reached its customer by the time it was opened."""
    o = outbox_t
    same_subject = sa.or_(
        sa.and_(t.c.incident_id.is_not(None), o.c.incident_id == t.c.incident_id),
        sa.and_(t.c.finding_id.is_not(None), o.c.finding_id == t.c.finding_id),
    )
    return sa.exists().where(
        o.c.customer_id == t.c.customer_id, o.c.status == "sent", o.c.sent_at <= t.c.opened_at, same_subject
    )


def avoidable_contacts(conn: sa.Connection, period: Period) -> dict[str, Any]:
    """Contacts about something already known, split by whether the customer had been told first."""
    t = tickets_t
    known = sa.or_(t.c.incident_id.is_not(None), t.c.finding_id.is_not(None))
    after = sa.and_(known, _notified_before(t))
    q = sa.select(
        sa.func.count().label("total"),
        sa.func.coalesce(sa.func.sum(sa.case((known, 1), else_=0)), 0).label("avoidable"),
        sa.func.coalesce(sa.func.sum(sa.case((after, 1), else_=0)), 0).label("after"),
    ).where(_in_period(t.c.opened_at, period), _in_segment(t.c.customer_id, period.segment))
    row = conn.execute(q).one()
    total, avoidable, after_n = int(row.total), int(row.avoidable), int(row.after)
    return {
        "total": avoidable,
        "share": _ratio(avoidable, total),
        "before_notice": avoidable - after_n,
        "after_notice": after_n,
    }


def repeat_contacts(conn: sa.Connection, period: Period) -> dict[str, Any]:
    """Contacts with an earlier contact by the same customer on the same topic within 7 days."""
    t = tickets_t
    prev = tickets_t.alias("prev")
    earlier = sa.exists().where(
        prev.c.customer_id == t.c.customer_id,
        prev.c.topic == t.c.topic,
        prev.c.id != t.c.id,
        prev.c.opened_at <= t.c.opened_at,
        sa.or_(prev.c.opened_at < t.c.opened_at, prev.c.id < t.c.id),
        seconds_between(t.c.opened_at, prev.c.opened_at, _dialect(conn)) <= REPEAT_WINDOW_S,
    )
    q = sa.select(
        sa.func.count().label("total"),
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(t.c.topic.is_not(None), earlier), 1), else_=0)), 0),
    ).where(_in_period(t.c.opened_at, period), _in_segment(t.c.customer_id, period.segment))
    total, repeats = conn.execute(q).one()
    return {"total": int(repeats), "share": _ratio(int(repeats), int(total)), "window_days": 7}


def notices(conn: sa.Connection, period: Period) -> dict[str, Any]:
    """Proactive notices sent in the period and the customers they reached."""
    o = outbox_t
    q = sa.select(sa.func.count(), sa.func.count(sa.distinct(o.c.customer_id))).where(
        _status_expr(o) == "sent",
        _in_period(o.c.sent_at, period),
        _in_segment(o.c.customer_id, period.segment),
    )
    sent, reached = conn.execute(q).one()
    return {"sent": int(sent), "customers": int(reached)}


def notices_series(conn: sa.Connection, period: Period, *, size: str = "day") -> list[dict[str, Any]]:
    """Notices sent per day or week."""
    o = outbox_t
    b = bucket(o.c.sent_at, _dialect(conn), size).label("bucket")
    q = (
        sa.select(b, sa.func.count().label("n"))
        .where(
            _status_expr(o) == "sent",
            _in_period(o.c.sent_at, period),
            _in_segment(o.c.customer_id, period.segment),
        )
        .group_by(b)
        .order_by(b)
    )
    counts = _dense(period, size, {str(r.bucket): int(r.n) for r in conn.execute(q)})
    return [{"bucket": b, "sent": n} for b, n in counts.items()]


def time_to_notify(conn: sa.Connection, period: Period) -> dict[str, Any]:
    """Per incident started in the period: its start to its first sent notice (seconds), p50 and p95."""
    o, i = outbox_t, incidents_t
    first = (
        sa.select(o.c.incident_id, sa.func.min(o.c.sent_at).label("first_sent"))
        .where(
            o.c.status == "sent",
            # only the incidents that started in the period: an indexed lookup, not every notice ever sent
            o.c.incident_id.in_(sa.select(i.c.id).where(_in_period(i.c.started_at, period))),
            _in_segment(o.c.customer_id, period.segment),
        )
        .group_by(o.c.incident_id)
        .subquery()
    )
    delays = (
        sa.select(seconds_between(first.c.first_sent, i.c.started_at, _dialect(conn)).label("s"))
        .join_from(first, i, i.c.id == first.c.incident_id)
        .where(_in_period(i.c.started_at, period))
        .subquery()
    )
    return _distribution(conn, delays.c.s)


def lead_time(conn: sa.Connection, period: Period) -> dict[str, Any]:
    """Per notice sent in the period: seconds until the first contact it anticipated (if any came)."""
    o, t = outbox_t, tickets_t
    same_subject = sa.or_(
        sa.and_(o.c.incident_id.is_not(None), t.c.incident_id == o.c.incident_id),
        sa.and_(o.c.finding_id.is_not(None), t.c.finding_id == o.c.finding_id),
    )
    first_contact = (
        sa.select(sa.func.min(t.c.opened_at))
        .where(t.c.customer_id == o.c.customer_id, t.c.opened_at >= o.c.sent_at, same_subject)
        .scalar_subquery()
    )
    per_notice = (
        sa.select(first_contact.label("first_contact"), o.c.sent_at)
        .where(
            _status_expr(o) == "sent",
            _in_period(o.c.sent_at, period),
            sa.or_(o.c.incident_id.is_not(None), o.c.finding_id.is_not(None)),
            _in_segment(o.c.customer_id, period.segment),
        )
        .subquery()
    )
    leads = sa.select(
        seconds_between(per_notice.c.first_contact, per_notice.c.sent_at, _dialect(conn)).label("s")
    ).subquery()
    return _distribution(conn, leads.c.s)


def _distribution(conn: sa.Connection, col: Any) -> dict[str, Any]:
    n = conn.execute(sa.select(sa.func.count(col))).scalar_one()
    ps = percentiles(conn, col, (0.5, 0.95))
    return {"count": int(n), "p50_s": ps[0.5], "p95_s": ps[0.95]}


def delivery(conn: sa.Connection, period: Period) -> dict[str, Any]:
    """Outbox rows created in the period by delivery status, the success rate and send latency."""
    o = outbox_t
    where = sa.and_(_in_period(o.c.created_at, period), _in_segment(o.c.customer_id, period.segment))
    rows = conn.execute(
        sa.select(o.c.status, sa.func.count())
        .where(where, _status_expr(o).in_(DELIVERY_STATUSES))
        .group_by(o.c.status)
    ).all()
    by_status = {s: 0 for s in DELIVERY_STATUSES} | {str(s): int(n) for s, n in rows}
    latency = (
        sa.select(seconds_between(o.c.sent_at, o.c.created_at, _dialect(conn)).label("s"))
        .where(where, _status_expr(o) == "sent", o.c.sent_at.is_not(None))
        .subquery()
    )
    lat = _distribution(conn, latency.c.s)
    done = by_status["sent"] + by_status["dead"]
    return {
        "by_status": by_status,
        "success_rate": _ratio(by_status["sent"], done),
        "latency_p50_s": lat["p50_s"],
        "latency_p95_s": lat["p95_s"],
    }


def suppressions(conn: sa.Connection, period: Period) -> list[dict[str, Any]]:
    """Guardrail decisions in the period, by status and reason, largest first."""
    o = outbox_t
    reason = sa.func.coalesce(o.c.reason, "(no reason)").label("reason")
    q = (
        sa.select(o.c.status, reason, sa.func.count().label("n"))
        .where(
            o.c.status.in_(GUARDRAIL_STATUSES),
            _in_period(o.c.created_at, period),
            _in_segment(o.c.customer_id, period.segment),
        )
        .group_by(o.c.status, reason)
        .order_by(sa.func.count().desc(), o.c.status, reason)
    )
    return [{"status": r.status, "reason": r.reason, "count": int(r.n)} for r in conn.execute(q)]


def _decisions(period: Period, playbook: str | None = None) -> sa.Subquery:
    """One row per (playbook, customer, group): when the playbook first decided about them in the period."""
    o = outbox_t
    group = sa.case((o.c.status == "control", "control"), else_="notified").label("grp")
    q = sa.select(o.c.playbook, o.c.customer_id, group, sa.func.min(o.c.created_at).label("at")).where(
        o.c.playbook.is_not(None),
        o.c.status.in_((*TREATED_STATUSES, "control")),
        _in_period(o.c.created_at, period),
        _in_segment(o.c.customer_id, period.segment),
        # only playbooks that hold out a control group in this period
        o.c.playbook.in_(
            sa.select(o.c.playbook).where(o.c.status == "control", _in_period(o.c.created_at, period))
        ),
    )
    if playbook is not None:
        q = q.where(o.c.playbook == playbook)
    return q.group_by(o.c.playbook, o.c.customer_id, group).subquery("decisions")


def control_groups(
    conn: sa.Connection,
    period: Period,
    *,
    window_days: int = 14,
    signals: SignalReader | None = None,
) -> list[dict[str, Any]]:
    """Notified against control per playbook: contact rate (and churn, CES when signals are given)."""
    d = _decisions(period)
    t = tickets_t
    contacted = sa.exists().where(
        t.c.customer_id == d.c.customer_id,
        t.c.opened_at >= d.c.at,
        seconds_between(t.c.opened_at, d.c.at, _dialect(conn)) <= window_days * 86400,
    )
    # the newest contact on record: a decision whose window runs past it cannot show an outcome yet
    data_end = conn.execute(sa.select(sa.func.max(t.c.opened_at))).scalar_one_or_none()
    if isinstance(data_end, str):
        data_end = datetime.fromisoformat(data_end)
    cutoff = (data_end - timedelta(days=window_days)) if data_end is not None else None
    complete = sa.case((d.c.at <= cutoff, 1), else_=0) if cutoff is not None else sa.literal(0)
    q = (
        sa.select(
            d.c.playbook,
            d.c.grp,
            sa.func.count().label("n"),
            sa.func.coalesce(sa.func.sum(sa.case((contacted, 1), else_=0)), 0).label("contacted"),
            sa.func.coalesce(sa.func.sum(complete), 0).label("complete"),
        )
        .group_by(d.c.playbook, d.c.grp)
        .order_by(d.c.playbook, d.c.grp)
    )
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    measurable: dict[str, int] = {}
    for r in conn.execute(q):
        counts.setdefault(r.playbook, {})[r.grp] = (int(r.n), int(r.contacted))
        measurable[r.playbook] = measurable.get(r.playbook, 0) + int(r.complete)
    extra = _signal_outcomes(conn, d, period, window_days, signals) if signals is not None and counts else {}
    out = []
    for pb, groups in counts.items():
        item: dict[str, Any] = {"playbook": pb, "window_days": window_days}
        for grp in ("notified", "control"):
            n, k = groups.get(grp, (0, 0))
            lo, hi = wilson(k, n)
            item[grp] = {"customers": n, "contacted": k, "contact_rate": _ratio(k, n), "ci95": [lo, hi]}
            item[grp].update(extra.get((pb, grp), {}))
        (nn, kn), (nc, kc) = groups.get("notified", (0, 0)), groups.get("control", (0, 0))
        lo, hi = newcombe_diff(kn, nn, kc, nc)
        diff = None if not nn or not nc else kn / nn - kc / nc
        item["contact_rate_diff"] = {"value": diff, "ci95": [lo, hi]}
        if extra:
            item["churn_diff"] = _diff_props(item, "churned")
        item["measurable"] = measurable.get(pb, 0)
        item["note"] = _control_note(item, data_end, window_days)
        out.append(item)
    return out


def _control_note(item: dict[str, Any], data_end: datetime | None, window_days: int) -> str | None:
    """Why a comparison shows no difference, when there is a reason other than chance (None otherwise)."""
    n, c = item["notified"], item["control"]
    if not c["customers"]:
        return "no customer was held out as control, so there is nothing to compare against"
    if item["measurable"] == 0:
        until = f" (contacts on record until {data_end:%Y-%m-%d})" if data_end is not None else ""
        return (
            f"too early to tell: the {window_days} days after these decisions are not over yet{until}, "
            "so no outcome can be counted"
        )
    if not n["contacted"] and not c["contacted"]:
        return f"no customer in either group contacted support within {window_days} days"
    return None


def _diff_props(item: dict[str, Any], key: str) -> dict[str, Any]:
    a, b = item["notified"], item["control"]
    kn, nn, kc, nc = a.get(key, 0), a["customers"], b.get(key, 0), b["customers"]
    lo, hi = newcombe_diff(kn, nn, kc, nc)
    return {"value": None if not nn or not nc else kn / nn - kc / nc, "ci95": [lo, hi]}


def _signal_outcomes(
    conn: sa.Connection, d: sa.Subquery, period: Period, window_days: int, signals: SignalReader
) -> dict[tuple[str, str], dict[str, Any]]:
    """Churn (a cancellation) and CES (survey answers) within the window after each decision, per group."""
    dec = pl.DataFrame(
        [tuple(r) for r in conn.execute(sa.select(d.c.playbook, d.c.customer_id, d.c.grp, d.c.at))],
        schema={
            "playbook": pl.String,
            "customer_id": pl.String,
            "grp": pl.String,
            "at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )
    end = period.end + timedelta(days=window_days)
    ids = dec["customer_id"].unique().to_list()
    window = pl.duration(days=window_days)

    def within(frame: pl.DataFrame) -> pl.DataFrame:
        return dec.join(frame, on="customer_id").filter(
            (pl.col("ts") >= pl.col("at")) & (pl.col("ts") <= pl.col("at") + window)
        )

    subs = _read(signals, "subscription", period.start, end, ids)
    churn = (
        within(subs.filter(pl.col("event_type") == "cancellation").select("customer_id", "ts"))
        .group_by("playbook", "grp")
        .agg(pl.col("customer_id").n_unique().alias("churned"))
        if subs.height
        else pl.DataFrame(schema={"playbook": pl.String, "grp": pl.String, "churned": pl.UInt32})
    )
    fb = _read(signals, "feedback", period.start, end, ids)
    ces = (
        within(
            fb.filter((pl.col("survey") == "ces") & pl.col("rating").is_not_null()).select(
                "customer_id", "ts", "rating"
            )
        )
        .group_by("playbook", "grp")
        .agg(
            pl.len().alias("n"), pl.col("rating").sum().alias("s"), (pl.col("rating") ** 2).sum().alias("s2")
        )
        if fb.height
        else pl.DataFrame(
            schema={
                "playbook": pl.String,
                "grp": pl.String,
                "n": pl.UInt32,
                "s": pl.Float64,
                "s2": pl.Float64,
            }
        )
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for pb, grp in dec.select("playbook", "grp").unique().iter_rows():
        out[(pb, grp)] = {
            "churned": 0,
            "churn_rate": None,
            "ces": {"answers": 0, "mean": None, "ci95": [None, None]},
        }
    groups = dec.group_by("playbook", "grp").agg(pl.col("customer_id").n_unique().alias("customers"))
    for pb, grp, n in groups.iter_rows():
        out[(pb, grp)]["churn_rate"] = 0.0 if n else None
    for pb, grp, k in churn.iter_rows():
        n = groups.filter((pl.col("playbook") == pb) & (pl.col("grp") == grp))["customers"].item()
        lo, hi = wilson(int(k), int(n))
        out[(pb, grp)].update({"churned": int(k), "churn_rate": k / n, "churn_ci95": [lo, hi]})
    for pb, grp, n, s, s2 in ces.iter_rows():
        lo, hi = mean_ci(int(n), float(s), float(s2))
        out[(pb, grp)]["ces"] = {"answers": int(n), "mean": s / n if n else None, "ci95": [lo, hi]}
    return out


def _read(
    signals: SignalReader, kind: str, start: datetime, end: datetime, customers: list[str] | None
) -> pl.DataFrame:
    frame = signals.read(kind, start=start, end=end, customers=customers)
    return frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame)  # type: ignore[return-value]


def surveys(signals: SignalReader | None, conn: sa.Connection, period: Period) -> dict[str, Any]:
    """CSAT and CES survey answers in the period: count and mean rating (``None`` without signals)."""
    empty = {"answers": 0, "mean": None}
    if signals is None:
        return {"csat": dict(empty), "ces": dict(empty), "available": False}
    ids = None
    if period.segment is not None:
        ids = list(
            conn.execute(sa.select(customers_t.c.id).where(customers_t.c.segment == period.segment)).scalars()
        )
    fb = _read(signals, "feedback", period.start, period.end, ids)
    out: dict[str, Any] = {"available": True}
    for name in ("csat", "ces"):
        answers = fb.filter(
            (pl.col("survey") == name)
            & pl.col("rating").is_not_null()
            & (pl.col("ts") >= period.start)
            & (pl.col("ts") < period.end)
        )["rating"]
        out[name] = {"answers": answers.len(), "mean": float(answers.mean()) if answers.len() else None}  # type: ignore[arg-type]
    return out


def outcome_metrics(
    engine: sa.Engine,
    period: Period,
    *,
    signals: SignalReader | None = None,
    bucket_size: str = "day",
    window_days: int = 14,
) -> dict[str, Any]:
    """All outcome metrics for ``period`` as one JSON-ready dict."""
    with engine.connect() as conn:
        return {
            "period": {
                "start": period.start.isoformat(),
                "end": period.end.isoformat(),
                "segment": period.segment,
            },
            "contacts": contacts(conn, period, size=bucket_size),
            "notices": notices(conn, period) | {"series": notices_series(conn, period, size=bucket_size)},
            "avoidable_contacts": avoidable_contacts(conn, period),
            "repeat_contacts": repeat_contacts(conn, period),
            "time_to_notify": time_to_notify(conn, period),
            "lead_time": lead_time(conn, period),
            "delivery": delivery(conn, period),
            "suppressions": suppressions(conn, period),
            "control_groups": control_groups(conn, period, window_days=window_days, signals=signals),
            "surveys": surveys(signals, conn, period),
        }
