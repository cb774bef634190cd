"""Things that are known ahead: contract renewals, expiring cards, device shipments.

- ``renewal_due``: a ``renewal_due`` subscription event 30 days before the contract ends; customers who were
  not told tend to call in the last week.
- ``card_expiry``: a ``card_expiry`` event a month before the card on file expires at a month end; the next
  payment fails the day after and some customers call.
- ``shipment_delay``: device orders (new ones, and replacements one day after a device failure) with ordered /
  in_transit / delayed / delivered events; a late shipment's ``delayed`` event is when it is
  ``detectable_from``; customers call after the promised day passes without a parcel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim import reactions
from forewarn.sim.clock import HOUR, US, day_us, epoch_us, rng
from forewarn.sim.config import SimConfig
from forewarn.sim.customers import Population
from forewarn.sim.devices import DeviceResult
from forewarn.sim.truth import record

CARRIERS = ("ParcelNet", "QuickShip", "PostCo")
SUB_SCHEMA = {
    "event_id": pl.String,
    "customer_id": pl.String,
    "ts": pl.Int64,
    "event_type": pl.String,
    "due_date": pl.Date,
    "plan_from": pl.String,
    "plan_to": pl.String,
    "service_id": pl.String,
    "details": pl.String,
}
SHIP_SCHEMA = {
    "event_id": pl.String,
    "customer_id": pl.String,
    "ts": pl.Int64,
    "shipment_id": pl.String,
    "promised_date": pl.Date,
    "expected_date": pl.Date,
    "status": pl.String,
    "carrier": pl.String,
}


@dataclass
class ScheduleResult:
    subscription: pl.DataFrame  # ts as us
    shipment: pl.DataFrame  # ts as us
    truth: list[dict[str, Any]]
    causes: pl.DataFrame


def generate(cfg: SimConfig, pop: Population, devices: DeviceResult) -> ScheduleResult:
    g = rng(cfg, "schedule")
    days, h = cfg.days, cfg.history_days
    end_us = epoch_us(cfg.end)
    date = [cfg.start + timedelta(days=d) for d in range(days + 60)]
    ids = pop.ids
    subs: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    cz: dict[str, tuple[list[str], list[str], list[int]]] = {}

    def cause(kind: str, rid: str, cid: str, t0: int) -> None:
        lists = cz.setdefault(kind, ([], [], []))
        lists[0].append(rid)
        lists[1].append(cid)
        lists[2].append(t0)

    postpaid = np.nonzero(~pop.prepaid)[0]
    renew = postpaid[g.random(len(postpaid)) < cfg.p_renewal_due]
    due = g.integers(max(30, h), days + 20, size=len(renew))
    for c, d in zip(renew, due, strict=True):
        cid = str(ids[c])
        ts = int(day_us(cfg, d - 30)) + 9 * HOUR
        rid = f"renewal_due-{cid}-{date[d].isoformat()}"
        subs.append(
            {
                "event_id": f"sub-{rid}",
                "customer_id": cid,
                "ts": ts,
                "event_type": "renewal_due",
                "due_date": date[d],
                "plan_from": cfg.plans[pop.plan[c]].name,
                "plan_to": None,
                "service_id": None,
                "details": "12-month contract ends; renews at the standard price",
            }
        )
        truth.append(
            record(
                rid,
                "renewal_due",
                customer_id=cid,
                start=ts,
                end=int(day_us(cfg, d)),
                detectable_from=ts,
                details={"due_date": date[d].isoformat()},
            )
        )
        cause("renewal_due", rid, cid, int(day_us(cfg, d - 7)))

    month_ends = [d for d in range(h, days) if date[d + 1].day == 1]
    if month_ends:
        cards = postpaid[g.random(len(postpaid)) < cfg.p_card_expiry]
        pick = np.array(month_ends)[g.integers(0, len(month_ends), size=len(cards))]
        for c, d in zip(cards, pick, strict=True):
            cid = str(ids[c])
            ts = max(int(day_us(cfg, d - 30)) + 9 * HOUR, int(day_us(cfg, 0)) + 9 * HOUR)
            rid = f"card_expiry-{cid}-{date[d].isoformat()}"
            subs.append(
                {
                    "event_id": f"sub-{rid}",
                    "customer_id": cid,
                    "ts": ts,
                    "event_type": "card_expiry",
                    "due_date": date[d],
                    "plan_from": None,
                    "plan_to": None,
                    "service_id": None,
                    "details": f"card ending {int(g.integers(1000, 9999))} expires {date[d]:%m/%y}",
                }
            )
            fail = int(day_us(cfg, d + 1)) + 6 * HOUR  # the first payment after expiry is declined
            truth.append(
                record(
                    rid,
                    "card_expiry",
                    customer_id=cid,
                    start=fail,
                    detectable_from=ts,
                    details={"expires": date[d].isoformat()},
                )
            )
            cause("card_expiry", rid, cid, fail + 24 * HOUR)

    # shipments: new orders and replacements for failed devices
    orders: list[tuple[int, str, int]] = []  # (customer index, reason, order time us)
    buyers = np.nonzero(g.random(pop.n) < cfg.p_shipment)[0]
    order_day = g.integers(max(1, h // 2), days - 2, size=len(buyers))
    hours = g.uniform(8, 20, size=len(buyers))
    orders += [
        (int(c), "order", int(day_us(cfg, d)) + int(x * 3600) * US)
        for c, d, x in zip(buyers, order_day, hours, strict=True)
    ]
    index = {str(x): i for i, x in enumerate(ids)}
    for row in devices.failures.iter_rows(named=True):
        orders.append((index[row["customer_id"]], "replacement", row["failed_at"] + 24 * HOUR))
    orders.sort(key=lambda o: (o[2], o[0]))
    ships: list[dict[str, Any]] = []
    counter: dict[int, int] = {}
    t0_us = epoch_us(cfg.start_dt)
    for c, reason, at in orders:
        if at >= end_us:
            continue
        cid = str(ids[c])
        counter[c] = counter.get(c, 0) + 1
        sid = f"SH-{cid}-{counter[c]}"
        oday = (at - t0_us) // (24 * HOUR * 1)
        promised = int(oday + (2 if reason == "replacement" else g.integers(2, 7)))
        late = g.random() < cfg.p_shipment_late
        delay = int(g.integers(2, 10)) if late else 0
        expected = promised + delay
        carrier = CARRIERS[int(g.integers(0, len(CARRIERS)))]

        def ev(
            status: str,
            ts: int,
            exp: int,
            sid: str = sid,
            cid: str = cid,
            carrier: str = carrier,
            promised: int = promised,
        ) -> None:
            if ts < end_us:
                ships.append(
                    {
                        "event_id": f"{sid}-{status}",
                        "customer_id": cid,
                        "ts": int(ts),
                        "shipment_id": sid,
                        "promised_date": date[promised],
                        "expected_date": date[exp],
                        "status": status,
                        "carrier": carrier,
                    }
                )

        ev("ordered", at, promised)
        ev("in_transit", at + int(g.uniform(12, 30) * 3600) * US, promised)
        if late:
            # the carrier usually knows before the promised day; sometimes only on it
            known = at + int(g.uniform(24, 24 * max(1, promised - oday)) * 3600) * US
            if g.random() < 0.3:
                known = int(day_us(cfg, promised)) + 14 * HOUR
            ev("delayed", known, expected)
            rid = f"shipment_delay-{sid}"
            start = int(day_us(cfg, promised)) + 18 * HOUR  # the promised day ends without a parcel
            if known < end_us:
                truth.append(
                    record(
                        rid,
                        "shipment_delay",
                        customer_id=cid,
                        start=start,
                        end=int(day_us(cfg, expected)) + 15 * HOUR,
                        detectable_from=known,
                        details={
                            "shipment_id": sid,
                            "reason": reason,
                            "promised_date": date[promised].isoformat(),
                            "expected_date": date[expected].isoformat(),
                            "delay_days": delay,
                        },
                    )
                )
                cause("shipment_delay", rid, cid, start)
        ev("delivered", int(day_us(cfg, expected)) + int(g.uniform(9, 18) * 3600) * US, expected)

    causes = [
        reactions.causes(r, kind, cids, np.asarray(t0, dtype=np.int64), cfg.reactions[kind].p_contact)
        for kind, (r, cids, t0) in sorted(cz.items())
    ]
    return ScheduleResult(
        subscription=pl.DataFrame(subs, schema=SUB_SCHEMA),
        shipment=pl.DataFrame(ships, schema=SHIP_SCHEMA),
        truth=truth,
        causes=pl.concat(causes) if causes else reactions.causes([], "renewal_due", [], np.array([]), 0.0),
    )
