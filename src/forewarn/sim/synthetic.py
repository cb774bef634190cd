"""A synthetic history for the dashboard: customers, incidents, notices, findings, tickets and signals, fast.

Not a simulation (``forewarn.sim`` is that): plausible rows in bulk so the dashboard and its benchmark have
something of the right shape and size — 100k customers and 10M signals build in a few minutes on 2 cores.
Deterministic for a given ``seed``.

>>> import tempfile
>>> from forewarn.state.db import upgrade, open_store
>>> url = f"sqlite:///{tempfile.mkdtemp()}/state.db"
>>> upgrade(url)
>>> summary = build(open_store(url), None, customers=200, days=30)
>>> summary["customers"], summary["incidents"] > 0, summary["tickets"] > 0
(200, True, True)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

from forewarn.state.models import (
    AffectedCustomer,
    Customer,
    Dependency,
    Finding,
    Incident,
    IncidentScope,
    IncidentUpdate,
    OutboxMessage,
    Service,
    Ticket,
)

END = datetime(2026, 3, 31, tzinfo=UTC)
SEGMENTS = ("home", "smb", "enterprise")
REGIONS = ("north", "south", "east", "west")
SERVICES = (("fibre", "Fibre broadband"), ("mobile", "Mobile"), ("tv", "TV streaming"))
CHANNELS = ("email", "sms")
FINDING_KINDS = {
    "usage": ("usage:drop:data_gb", "your data use fell to {x:.0f}% of your usual in the last week"),
    "billing": ("billing:shock", "your bill is {x:.1f}x your usual; roaming charges are new this month"),
    "devices": ("device:smart_5", "your router's storage reports {x:.0f} reallocated sectors, up from 0"),
    "cadence": ("cadence:late", "you usually top up every week; it has been {x:.0f} days"),
}
FIRST = (
    "Ada",
    "Ben",
    "Chloé",
    "Dev",
    "Eli",
    "Fatima",
    "Gus",
    "Hana",
    "Ivan",
    "Jo",
    "Kofi",
    "Lena",
    "Mo",
    "Nia",
)
LAST = ("Smith", "Okafor", "García", "Nguyen", "Kowalski", "Haddad", "Jensen", "Rossi", "Tanaka", "Murphy")


def _chunks(rows: list[dict[str, Any]], n: int = 20_000) -> Any:
    for i in range(0, len(rows), n):
        yield rows[i : i + n]


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    keys = {k for r in rows for k in r}  # executemany wants the same keys in every row
    rows = [r if len(r) == len(keys) else {k: r.get(k) for k in keys} for r in rows]
    for chunk in _chunks(rows):
        conn.execute(sa.insert(table), chunk)


def build(
    engine: sa.Engine,
    store: Any | None,
    *,
    customers: int = 1000,
    n_signals: int = 0,
    days: int = 60,
    end: datetime = END,
    seed: int = 7,
) -> dict[str, int]:
    """Fill an empty, migrated state store (and ``store``, a ``SignalStore``, when given) with a history.

    ``days`` of history end at ``end``; ``n_signals`` usage/feedback/subscription/contact signals in total.
    """
    rng = np.random.default_rng(seed)
    start = end - timedelta(days=days)
    n = customers
    ids = [f"C{i:07d}" for i in range(n)]
    seg = rng.choice(len(SEGMENTS), n, p=[0.7, 0.25, 0.05])
    reg = rng.integers(0, len(REGIONS), n)
    chan = rng.integers(0, len(CHANNELS), n)
    first, last = rng.integers(0, len(FIRST), n), rng.integers(0, len(LAST), n)
    cust_rows = [
        {
            "id": ids[i],
            "name": f"{FIRST[first[i]]} {LAST[last[i]]}",
            "email": f"{ids[i].lower()}@example.test",
            "phone": f"+4470{i:08d}",
            "segment": SEGMENTS[seg[i]],
            "region": REGIONS[reg[i]],
            "plan": ("basic", "plus", "max")[i % 3],
            "channels": [CHANNELS[chan[i]]],
            "attributes": {},
            "created_at": start - timedelta(days=365),
        }
        for i in range(n)
    ]
    # every customer uses fibre; about half also mobile and a third TV
    deps = [{"customer_id": ids[i], "service_id": "fibre", "region": REGIONS[reg[i]]} for i in range(n)]
    deps += [
        {"customer_id": ids[i], "service_id": "mobile", "region": REGIONS[reg[i]]} for i in range(0, n, 2)
    ]
    deps += [{"customer_id": ids[i], "service_id": "tv", "region": REGIONS[reg[i]]} for i in range(1, n, 3)]
    by_scope: dict[tuple[str, str], list[int]] = {}
    index = {c: i for i, c in enumerate(ids)}
    for d in deps:
        by_scope.setdefault((d["service_id"], d["region"]), []).append(index[d["customer_id"]])

    # incidents: one every few days, the latest still open
    n_inc = max(2, days // 4)
    inc_rows, scope_rows, upd_rows, aff_rows, outbox, tickets = [], [], [], [], [], []
    oid = 0
    for k in range(n_inc):
        iid = k + 1
        svc = SERVICES[k % len(SERVICES)][0]
        region = REGIONS[(k * 7) % len(REGIONS)]
        started = start + timedelta(days=days * (k + 0.5) / n_inc, hours=int(rng.integers(0, 12)))
        is_open = k == n_inc - 1
        resolved = None if is_open else started + timedelta(hours=int(rng.integers(2, 30)))
        inc_rows.append(
            {
                "id": iid,
                "external_key": f"synthetic-{iid}",
                "title": f"{dict(SERVICES)[svc]} outage in the {region}",
                "status": "investigating" if is_open else "resolved",
                "severity": ("major", "critical", "minor")[k % 3],
                "source": "monitor",
                "public_message": f"{dict(SERVICES)[svc]} is down for some customers in the {region}.",
                "started_at": started,
                "resolved_at": resolved,
                "created_at": started,
                "updated_at": resolved or started,
            }
        )
        scope_rows.append({"incident_id": iid, "service_id": svc, "region": region, "added_at": started})
        upd_rows.append(
            {
                "incident_id": iid,
                "seq": 0,
                "status": "investigating",
                "created_at": started,
                "message": "We are looking into it and will update you.",
            }
        )
        if resolved:
            upd_rows.append(
                {
                    "incident_id": iid,
                    "seq": 1,
                    "status": "resolved",
                    "created_at": resolved,
                    "message": "Fixed. Sorry for the trouble.",
                }
            )
        members = by_scope.get((svc, region), [])
        notify_delay = timedelta(minutes=int(rng.integers(3, 40)))
        outcome = rng.random(len(members))
        for j, ci in enumerate(members):
            cid = ids[ci]
            aff_rows.append(
                {
                    "incident_id": iid,
                    "customer_id": cid,
                    "service_id": svc,
                    "region": region,
                    "added_at": started,
                }
            )
            oid += 1
            created = started + notify_delay
            u = outcome[j]
            if is_open and u < 0.3:
                status, sent, reason = "pending", None, None
            elif u < 0.03:
                status, sent, reason = "dead", None, None
            elif u < 0.05:
                status, sent, reason = "suppressed", None, "no consent for outage on " + CHANNELS[chan[ci]]
            elif u < 0.06:
                status, sent, reason = "deferred", None, "quiet hours"
            else:
                status, sent, reason = "sent", created + timedelta(seconds=int(rng.integers(1, 300))), None
            outbox.append(
                {
                    "id": oid,
                    "idempotency_key": f"inc:{iid}:0:{cid}:{CHANNELS[chan[ci]]}",
                    "customer_id": cid,
                    "channel": CHANNELS[chan[ci]],
                    "address": cust_rows[ci]["email"],
                    "topic": "outage",
                    "thread_key": f"incident:{iid}:{cid}",
                    "priority": "high",
                    "subject": inc_rows[-1]["title"],
                    "body": inc_rows[-1]["public_message"],
                    "payload": {},
                    "status": status,
                    "reason": reason,
                    "attempts": 6 if status == "dead" else int(status == "sent"),
                    "last_error": "550 mailbox unavailable" if status == "dead" else None,
                    "next_attempt_at": created,
                    "incident_id": iid,
                    "playbook": "outage-notice",
                    "created_at": created,
                    "sent_at": sent,
                }
            )
            # told customers call less, and later
            p_call = 0.04 if status == "sent" else 0.15
            if rng.random() < p_call:
                at = started + timedelta(minutes=int(rng.integers(5, 600)))
                tickets.append((cid, at, "outage", iid, None, "phone"))

    # findings and the playbooks that act on them (10% held out as control)
    n_find = max(1, n // 20)
    who = rng.choice(n, n_find, replace=False)
    kinds = list(FINDING_KINDS)
    find_rows = []
    for j, ci in enumerate(who):
        kind = kinds[j % len(kinds)]
        cond, text = FINDING_KINDS[kind]
        x = float(rng.uniform(2, 60))
        at = start + timedelta(days=float(rng.uniform(0, days)))
        score = float(rng.uniform(1, 9))
        sev = "critical" if score > 7 else "warning" if score > 4 else "info"
        find_rows.append(
            {
                "id": j + 1,
                "customer_id": ids[ci],
                "kind": kind,
                "condition": cond,
                "status": "open" if rng.random() < 0.6 else "closed",
                "score": round(score, 2),
                "confidence": round(float(rng.uniform(0.5, 0.99)), 2),
                "severity": sev,
                "explanation": text.format(x=x),
                "evidence": {"value": round(x, 2), "baseline": 1.0, "window_days": 28},
                "first_detected_at": at,
                "last_detected_at": at + timedelta(days=1),
                "created_at": at,
                "updated_at": at,
            }
        )
        oid += 1
        control = rng.random() < 0.1
        sent = None if control else at + timedelta(minutes=int(rng.integers(1, 60)))
        outbox.append(
            {
                "id": oid,
                "idempotency_key": f"finding:{j + 1}:{ids[ci]}",
                "customer_id": ids[ci],
                "channel": CHANNELS[chan[ci]],
                "address": cust_rows[ci]["email"],
                "topic": kind,
                "thread_key": f"finding:{j + 1}",
                "priority": "normal",
                "subject": "Something we noticed about your account",
                "body": text.format(x=x),
                "payload": {},
                "status": "control" if control else "sent",
                "reason": "control group (10% holdout)" if control else None,
                "attempts": 0 if control else 1,
                "next_attempt_at": at,
                "finding_id": j + 1,
                "playbook": f"{kind}-care",
                "created_at": at,
                "sent_at": sent,
            }
        )
        if rng.random() < (0.25 if control else 0.12):
            tickets.append(
                (ids[ci], at + timedelta(hours=int(rng.integers(2, 200))), kind, None, j + 1, "chat")
            )

    # background contacts: about 0.1 per customer per 30 days, some repeated within a week
    n_bg = int(n * days / 300)
    who = rng.integers(0, n, n_bg)
    when = rng.uniform(0, days * 86400, n_bg)
    topics = ("billing", "account", "device", "usage")
    for ci, s in zip(who, when, strict=True):
        at = start + timedelta(seconds=float(s))
        topic = topics[int(s) % len(topics)]
        tickets.append((ids[ci], at, topic, None, None, ("phone", "email", "chat")[int(s) % 3]))
        if int(s) % 5 == 0:
            tickets.append((ids[ci], at + timedelta(days=2), topic, None, None, "phone"))
    ticket_rows = [
        {
            "id": t + 1,
            "external_id": f"contact-{t + 1}",
            "customer_id": cid,
            "channel": ch,
            "subject": f"About my {topic}",
            "text": f"Hello, I have a question about my {topic}.",
            "topic": topic,
            "status": "closed" if at < end - timedelta(days=3) else "open",
            "opened_at": at,
            "incident_id": iid,
            "finding_id": fid,
            "created_at": at,
        }
        for t, (cid, at, topic, iid, fid, ch) in enumerate(tickets)
        if at < end
    ]
    with engine.begin() as conn:
        _insert(conn, Customer.__table__, cust_rows)
        _insert(conn, Service.__table__, [{"id": s, "name": nm, "public": True} for s, nm in SERVICES])
        _insert(conn, Dependency.__table__, deps)
        _insert(conn, Incident.__table__, inc_rows)
        _insert(conn, IncidentScope.__table__, scope_rows)
        _insert(conn, IncidentUpdate.__table__, upd_rows)
        _insert(conn, AffectedCustomer.__table__, aff_rows)
        _insert(conn, Finding.__table__, find_rows)
        _insert(conn, Ticket.__table__, ticket_rows)
        _insert(conn, OutboxMessage.__table__, outbox)
        if conn.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table in ("incidents", "findings", "tickets", "outbox", "incident_updates"):
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                    )
                )
    n_sig = _signals(store, ids, ticket_rows, start, days, n_signals, rng) if store is not None else 0
    return {
        "customers": n,
        "incidents": len(inc_rows),
        "affected": len(aff_rows),
        "findings": len(find_rows),
        "outbox": len(outbox),
        "tickets": len(ticket_rows),
        "signals": n_sig,
    }


def _signals(
    store: Any,
    ids: list[str],
    tickets: list[dict[str, Any]],
    start: datetime,
    days: int,
    total: int,
    rng: np.random.Generator,
) -> int:
    """Contacts (one per ticket), surveys (CSAT/CES), cancellations, and daily usage to fill ``total``."""
    n = len(ids)
    written = 0
    if tickets:
        contact = pl.DataFrame(
            {
                "event_id": [t["external_id"] for t in tickets],
                "customer_id": [t["customer_id"] for t in tickets],
                "ts": [t["opened_at"] for t in tickets],
                "channel": [t["channel"] for t in tickets],
                "subject": [t["subject"] for t in tickets],
                "text": [t["text"] for t in tickets],
                "topic": [t["topic"] for t in tickets],
            }
        )
        written += store.append("contact", contact).new
    m = max(1, n // 10)
    who = rng.integers(0, n, m)
    secs = rng.uniform(0, days * 86400, m)
    survey = np.where(np.arange(m) % 2 == 0, "csat", "ces")
    fb = pl.DataFrame(
        {
            "event_id": [f"fb-{i}" for i in range(m)],
            "customer_id": [ids[i] for i in who],
            "ts": [start + timedelta(seconds=float(s)) for s in secs],
            "source": ["survey"] * m,
            "survey": survey.tolist(),
            "rating": rng.integers(1, 6, m).astype(float).tolist(),
            "text": ["Thanks"] * m,
        }
    )
    written += store.append("feedback", fb).new
    c = max(1, n // 100)
    who = rng.choice(n, c, replace=False)
    subs = pl.DataFrame(
        {
            "event_id": [f"cancel-{i}" for i in range(c)],
            "customer_id": [ids[i] for i in who],
            "ts": [start + timedelta(seconds=float(s)) for s in rng.uniform(0, days * 86400, c)],
            "event_type": ["cancellation"] * c,
        }
    )
    written += store.append("subscription", subs).new
    usage_left = max(0, total - written)
    if usage_left == 0:
        return written
    per_day = max(1, -(-usage_left // days))  # ceil: rows per day across customers
    ids_s = pl.Series("customer_id", ids)
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    done = 0
    for d in range(days):
        k = min(per_day, usage_left - done)
        if k <= 0:
            break
        idx = np.arange(done, done + k) % n  # customers in turn, so each gets a daily series
        frame = pl.DataFrame(
            {
                "event_id": pl.Series(np.arange(done, done + k)).cast(pl.String).str.replace(r"^", "u-"),
                "customer_id": ids_s.gather(idx),
                "ts": pl.Series([day0 + timedelta(days=d)] * k, dtype=pl.Datetime("us", "UTC")),
                "metric": pl.Series(["data_gb"] * k),
                "value": pl.Series(np.round(rng.gamma(2.0, 1.5, k), 3)),
                "unit": pl.Series(["GB"] * k),
                "period": pl.Series(["day"] * k),
            }
        )
        done += store.append("usage", frame).new
    return written + done
