"""Monthly invoices with line items, bill shocks and billing errors.

Every postpaid customer gets an invoice per billing cycle: a DRAFT two hours after the cycle closes and the
ISSUED invoice two days later. Line codes: ``base`` (plan fee), ``addon_<service>`` (add-on services),
``device`` (instalment), ``roaming``, ``overage`` (GB over the allowance x ``overage_per_gb``), ``discount``
(negative) and ``tax`` (on the sum of the others).

Injected: roaming shocks, price changes (a promotion ends: the base fee jumps, announced by a ``plan_change``
subscription event ~30 days ahead) and billing errors on the draft (a duplicated line, a charge for a service
the customer does not have, an overage inconsistent with the metered usage). In this baseline world nobody
catches the errors, so the issued invoice repeats them. ``bill_shock`` is found, not injected: an issued total
at least ``bill_shock_ratio`` x the usual (median of up to three previous totals) and ``bill_shock_min_delta``
more; invoices with a billing error are recorded as ``billing_error`` only.

The first invoice covers a cycle that began before the simulated window; its usage charges count in-window
use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim import reactions
from forewarn.sim.clock import HOUR, day_us, epoch_us, rng, to_datetime
from forewarn.sim.config import ADDONS, SimConfig
from forewarn.sim.customers import Population
from forewarn.sim.truth import record
from forewarn.sim.usage import UsageResult

SERVICE_NAMES = {
    "mobile": "Mobile add-on",
    "tv": "TV add-on",
    "email": "Extra mailboxes",
    "voip": "Home phone",
}


@dataclass
class BillingResult:
    frame: pl.DataFrame  # invoice signals (draft and issued)
    notices: pl.DataFrame  # plan_change subscription rows announcing price changes
    truth: list[dict[str, Any]]
    causes: pl.DataFrame


def _month_back(d: Any) -> Any:
    return (d.replace(day=1) - timedelta(days=1)).replace(day=d.day)


def generate(cfg: SimConfig, pop: Population, usage: UsageResult) -> BillingResult:
    g = rng(cfg, "billing")
    days = cfg.days
    end_us = epoch_us(cfg.end)
    mask = usage.cycles.start_mask.copy()
    mask[:, 0] = False
    mask[pop.prepaid] = False
    ic, ie = np.nonzero(mask)  # invoice for customer ic, for the cycle that ends the day before ie
    n_inv = len(ic)
    dates = [cfg.start + timedelta(days=d) for d in range(days + 1)]
    issue_date = np.array([dates[e] for e in ie])
    period_start = np.array([_month_back(d) for d in issue_date])
    period_end = np.array([d - timedelta(days=1) for d in issue_date])
    ids = pop.ids
    inv_id = np.array([f"INV-{ids[c]}-{d.strftime('%Y%m')}" for c, d in zip(ic, issue_date, strict=True)])
    draft_ts = day_us(cfg, ie) + 2 * HOUR
    issued_ts = day_us(cfg, ie + 2) + 8 * HOUR
    used = usage.cycles.cycle_used[ic, ie - 1]
    seq = np.zeros(n_inv, dtype=int)  # invoice number per customer
    for_c: dict[int, list[int]] = {}
    for i, c in enumerate(ic):
        seq[i] = len(for_c.setdefault(int(c), []))
        for_c[int(c)].append(i)

    # price changes: a promotion ends from the customer's third invoice on
    postpaid = np.nonzero(~pop.prepaid)[0]
    price_mult = np.ones(n_inv)
    changed = postpaid[g.random(len(postpaid)) < cfg.p_price_change]
    notice_rows: list[dict[str, Any]] = []
    change_at: dict[int, int] = {}  # customer -> invoice index where the new price first shows
    for c in changed:
        # the new price shows from the customer's third invoice on, after the history period
        inv = [i for i in for_c.get(int(c), []) if ie[i] >= cfg.history_days and seq[i] >= 2]
        if not inv:
            continue
        first = inv[int(g.integers(0, len(inv)))]
        mult = float(g.uniform(*cfg.price_change))
        for i in for_c[int(c)]:
            if seq[i] >= seq[first]:
                price_mult[i] = mult
        change_at[int(c)] = first
        old = pop.monthly_fee[c]
        notice_ts = day_us(cfg, 0) + (int(ie[first]) - 60) * 24 * HOUR + 9 * HOUR
        if notice_ts >= day_us(cfg, 0):
            notice_rows.append(
                {
                    "event_id": f"sub-price-{inv_id[first]}",
                    "customer_id": str(ids[c]),
                    "ts": int(notice_ts),
                    "event_type": "plan_change",
                    "due_date": period_start[first],
                    "plan_from": cfg.plans[pop.plan[c]].name,
                    "plan_to": cfg.plans[pop.plan[c]].name,
                    "service_id": None,
                    "details": f"promotional price ends: monthly fee {old:.2f} -> {old * mult:.2f}",
                }
            )

    # line items, long: (invoice, order, code, description, amount, quantity)
    parts: list[tuple[np.ndarray, int, str, np.ndarray | list[str], np.ndarray, np.ndarray]] = []
    one = np.ones(n_inv)
    plan_names = np.array([p.name for p in cfg.plans])[pop.plan[ic]]
    base = np.round(pop.monthly_fee[ic] * price_mult, 2)
    parts.append((np.arange(n_inv), 0, "base", [f"{p} monthly fee" for p in plan_names], base, one))
    plan_services = [set(p.services) for p in cfg.plans]
    for s, (fee, _) in ADDONS.items():
        si = pop.service_index[s]
        has_addon = np.array(
            [pop.services[c, si] and s not in plan_services[pop.plan[c]] for c in ic], dtype=bool
        )
        rows = np.nonzero(has_addon)[0]
        parts.append(
            (rows, 1, f"addon_{s}", [SERVICE_NAMES[s]] * len(rows), np.full(len(rows), fee), one[rows])
        )
    instal = (g.random(pop.n) < cfg.p_device_instalment)[ic]
    rows = np.nonzero(instal)[0]
    parts.append((rows, 2, "device", ["Device instalment"] * len(rows), np.full(len(rows), 8.5), one[rows]))
    mobile = pop.has("mobile")[ic]
    small = mobile & (g.random(n_inv) < cfg.p_roaming_small)
    roam_amount = np.where(small, np.round(g.uniform(2.0, 15.0, n_inv), 2), 0.0)
    roam_days = np.where(small, g.integers(1, 4, n_inv), 0)
    shock_cust = np.nonzero(pop.has("mobile") & ~pop.prepaid & (g.random(pop.n) < cfg.p_roaming_shock))[0]
    for c in shock_cust:
        inv = [i for i in for_c.get(int(c), []) if seq[i] >= 1 and ie[i] >= cfg.history_days]
        if inv:
            i = inv[int(g.integers(0, len(inv)))]
            roam_amount[i] = round(float(g.uniform(*cfg.roaming_shock)), 2)
            roam_days[i] = int(g.integers(4, 15))
    rows = np.nonzero(roam_amount > 0)[0]
    parts.append(
        (rows, 3, "roaming", ["Roaming charges"] * len(rows), roam_amount[rows], roam_days[rows] * 1.0)
    )
    limit = pop.limit_gb[ic]
    over = np.where(np.isnan(limit), 0.0, np.maximum(used - np.nan_to_num(limit, nan=np.inf), 0.0))
    over = np.round(over, 2)
    rows = np.nonzero(over > 0)[0]
    parts.append(
        (
            rows,
            4,
            "overage",
            ["Data over allowance"] * len(rows),
            np.round(over[rows] * cfg.overage_per_gb, 2),
            over[rows],
        )
    )
    loyal = (g.random(pop.n) < cfg.p_loyalty_discount)[ic]
    rows = np.nonzero(loyal)[0]
    parts.append((rows, 5, "discount", ["Loyalty discount"] * len(rows), np.full(len(rows), -5.0), one[rows]))

    lines = pl.concat(
        [
            pl.DataFrame(
                {
                    "inv": r.astype(np.int64),
                    "order": np.full(len(r), o, dtype=np.int64),
                    "code": [code] * len(r),
                    "description": list(desc),
                    "amount": np.asarray(amt, dtype=float),
                    "quantity": np.asarray(q, dtype=float),
                },
                schema={
                    "inv": pl.Int64,
                    "order": pl.Int64,
                    "code": pl.String,
                    "description": pl.String,
                    "amount": pl.Float64,
                    "quantity": pl.Float64,
                },
            )
            for r, o, code, desc, amt, q in parts
        ]
    )

    # billing errors on drafts
    truth: list[dict[str, Any]] = []
    cause_ids, cause_c, cause_t0, cause_info = [], [], [], []
    err = np.nonzero(g.random(n_inv) < cfg.p_billing_error)[0]
    extra, drop_overage = [], []
    error_inv = set()
    for i in err:
        c = ic[i]
        lacking = [s for s in ADDONS if not pop.services[c, pop.service_index[s]]]
        options = ["duplicate_line"] + (["unsubscribed_service"] if lacking else [])
        options += ["usage_mismatch"] if not np.isnan(limit[i]) else []
        kind = options[int(g.integers(0, len(options)))]
        if kind == "duplicate_line":
            row = {
                "inv": int(i),
                "order": 0,
                "code": "base",
                "description": f"{plan_names[i]} monthly fee",
                "amount": float(base[i]),
                "quantity": 1.0,
            }
            details = {"line_code": "base", "amount": float(base[i])}
        elif kind == "unsubscribed_service":
            s = lacking[int(g.integers(0, len(lacking)))]
            row = {
                "inv": int(i),
                "order": 1,
                "code": f"addon_{s}",
                "description": SERVICE_NAMES[s],
                "amount": ADDONS[s][0],
                "quantity": 1.0,
            }
            details = {"line_code": f"addon_{s}", "service_id": s, "amount": ADDONS[s][0]}
        else:
            billed = round(float(over[i] + g.uniform(20.0, 60.0)), 2)
            drop_overage.append(int(i))
            row = {
                "inv": int(i),
                "order": 4,
                "code": "overage",
                "description": "Data over allowance",
                "amount": round(billed * cfg.overage_per_gb, 2),
                "quantity": billed,
            }
            details = {
                "line_code": "overage",
                "billed_gb": billed,
                "metered_over_gb": float(over[i]),
                "used_gb": round(float(used[i]), 3),
                "limit_gb": float(limit[i]),
            }
        extra.append(row)
        error_inv.add(int(i))
        rid = f"billing_error-{inv_id[i]}"
        truth.append(
            record(
                rid,
                "billing_error",
                customer_id=str(ids[c]),
                start=int(draft_ts[i]),
                end=int(issued_ts[i]),
                detectable_from=int(draft_ts[i]),
                details={"invoice_id": str(inv_id[i]), "error": kind, **details},
            )
        )
        if issued_ts[i] < end_us:
            cause_ids.append(rid)
            cause_c.append(c)
            cause_t0.append(int(issued_ts[i]))
            cause_info.append(kind if kind != "unsubscribed_service" else f"{kind}:{details['service_id']}")
    if drop_overage:
        lines = lines.filter(~(pl.col("inv").is_in(drop_overage) & (pl.col("code") == "overage")))
    if extra:
        lines = pl.concat([lines, pl.DataFrame(extra, schema=lines.schema)])

    sub = lines.group_by("inv").agg(pl.col("amount").sum().alias("subtotal")).sort("inv")
    subtotal = np.zeros(n_inv)
    subtotal[sub["inv"].to_numpy()] = sub["subtotal"].to_numpy()
    tax_rate = np.array([r.tax_rate for r in cfg.regions])[pop.region[ic]]
    tax = np.round(subtotal * tax_rate, 2)
    lines = pl.concat(
        [
            lines,
            pl.DataFrame(
                {
                    "inv": np.arange(n_inv),
                    "order": np.full(n_inv, 9),
                    "code": ["tax"] * n_inv,
                    "description": [f"Tax {r * 100:.0f}%" for r in tax_rate],
                    "amount": tax,
                    "quantity": np.ones(n_inv),
                },
                schema=lines.schema,
            ),
        ]
    ).sort(["inv", "order", "code"], maintain_order=True)
    total = np.round(subtotal + tax, 2)

    # bill shocks on the issued totals
    comp = (
        lines.group_by("inv")
        .agg(
            (pl.col("amount").filter(pl.col("code") == c).sum().alias(c))
            for c in ("base", "roaming", "overage")
        )
        .sort("inv")
    )
    inv_frame = pl.DataFrame({"inv": np.arange(n_inv), "c": ic, "e": ie, "total": total}).join(comp, on="inv")
    inv_frame = inv_frame.sort(["c", "e"]).with_columns(
        pl.col("total").shift(1).rolling_median(3, min_samples=1).over("c").alias("usual"),
        pl.col("total").shift(1).over("c").alias("previous"),
        *(pl.col(k).shift(1).over("c").alias(f"prev_{k}") for k in ("base", "roaming", "overage")),
    )
    shocks = inv_frame.filter(
        pl.col("usual").is_not_null()
        & (pl.col("total") >= cfg.bill_shock_ratio * pl.col("usual"))
        & (pl.col("total") - pl.col("usual") >= cfg.bill_shock_min_delta)
        & (pl.col("total") >= cfg.bill_shock_ratio * pl.col("previous"))  # a new jump, not the new normal
        & ~pl.col("inv").is_in(list(error_inv))
    )
    currency = np.array([r.currency for r in cfg.regions])
    notice_at = {r["event_id"][len("sub-price-") :]: r["ts"] for r in notice_rows}
    for row in shocks.iter_rows(named=True):
        i, c = row["inv"], row["c"]
        deltas = {
            "price_change": row["base"] - (row["prev_base"] or 0.0),
            "roaming": row["roaming"] - (row["prev_roaming"] or 0.0),
            "overage": row["overage"] - (row["prev_overage"] or 0.0),
        }
        reason = max(deltas, key=lambda k: deltas[k])
        rid = f"bill_shock-{inv_id[i]}"
        detectable = int(draft_ts[i])
        if reason == "price_change" and str(inv_id[i]) in notice_at:
            detectable = min(detectable, int(notice_at[str(inv_id[i])]))
        truth.append(
            record(
                rid,
                "bill_shock",
                customer_id=str(ids[c]),
                start=int(issued_ts[i]),
                detectable_from=detectable,
                details={
                    "invoice_id": str(inv_id[i]),
                    "reason": reason,
                    "total": float(row["total"]),
                    "usual": round(float(row["usual"]), 2),
                    "ratio": round(row["total"] / row["usual"], 2),
                    "currency": str(currency[pop.region[c]]),
                },
            )
        )
        if issued_ts[i] < end_us:
            cause_ids.append(rid)
            cause_c.append(c)
            cause_t0.append(int(issued_ts[i]))
            cause_info.append(reason)

    # the invoice rows: a draft, then the issued copy if it went out inside the window
    agg = (
        lines.group_by("inv", maintain_order=True)
        .agg(pl.struct(["code", "description", "amount", "quantity"]).alias("lines"))
        .sort("inv")
    )
    head = pl.DataFrame(
        {
            "invoice_id": pl.Series(list(inv_id), dtype=pl.String),
            "customer_id": pl.Series(list(ids[ic]), dtype=pl.String),
            "period_start": pl.Series(list(period_start), dtype=pl.Date),
            "period_end": pl.Series(list(period_end), dtype=pl.Date),
            "total": pl.Series(total, dtype=pl.Float64),
            "currency": pl.Series(list(currency[pop.region[ic]]), dtype=pl.String),
            "lines": agg["lines"],
        }
    )
    draft = head.with_columns(
        (pl.col("invoice_id") + "-draft").alias("event_id"),
        to_datetime(draft_ts),
        pl.lit("draft").alias("status"),
    ).filter(pl.Series(draft_ts < end_us))
    issued = head.with_columns(
        (pl.col("invoice_id") + "-issued").alias("event_id"),
        to_datetime(issued_ts),
        pl.lit("issued").alias("status"),
    ).filter(pl.Series(issued_ts < end_us))
    cols = [
        "event_id",
        "customer_id",
        "ts",
        "invoice_id",
        "status",
        "period_start",
        "period_end",
        "total",
        "currency",
        "lines",
    ]
    frame = pl.concat([draft.select(cols), issued.select(cols)]).sort(["ts", "event_id"])

    notices = pl.DataFrame(
        notice_rows,
        schema={
            "event_id": pl.String,
            "customer_id": pl.String,
            "ts": pl.Int64,
            "event_type": pl.String,
            "due_date": pl.Date,
            "plan_from": pl.String,
            "plan_to": pl.String,
            "service_id": pl.String,
            "details": pl.String,
        },
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    types = {rid.split("-", 1)[0] for rid in cause_ids}
    cause_frames = []
    cc = np.asarray(cause_c, dtype=int)
    for t in sorted(types):
        sel = np.array([r.startswith(t + "-") for r in cause_ids], dtype=bool)
        cause_frames.append(
            reactions.causes(
                np.asarray(cause_ids)[sel],
                t,
                ids[cc[sel]],
                np.asarray(cause_t0, dtype=np.int64)[sel],
                cfg.reactions[t].p_contact,
                None,
                list(np.asarray(cause_info)[sel]),
            )
        )
    causes = (
        pl.concat(cause_frames) if cause_frames else reactions.causes([], "bill_shock", [], np.array([]), 0.0)
    )
    return BillingResult(frame=frame, notices=notices, truth=truth, causes=causes)
