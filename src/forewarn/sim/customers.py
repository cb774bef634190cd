"""Customers: who they are, where they live, what they pay for and how they want to be reached.

>>> from forewarn.sim.config import SimConfig
>>> pop = generate(SimConfig(customers=50, days=30, seed=1))
>>> len(pop.ids), str(pop.ids[0])
(50, 'C00001')
>>> bool(pop.services[:, pop.service_index["broadband"]].any())
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim.clock import rng
from forewarn.sim.config import ADDONS, SimConfig

FIRST = [
    "Aoife",
    "Ben",
    "Chloe",
    "Daniel",
    "Emma",
    "Farah",
    "Grace",
    "Hamza",
    "Isla",
    "James",
    "Kai",
    "Leah",
    "Liam",
    "Maya",
    "Noah",
    "Olivia",
    "Priya",
    "Quinn",
    "Ravi",
    "Sofia",
    "Tom",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
    "Ana",
    "Bruno",
    "Carmen",
    "Dev",
    "Elena",
    "Finn",
    "Gita",
    "Hugo",
    "Ines",
    "Jack",
    "Kofi",
    "Lena",
    "Marco",
    "Nia",
]
LAST = [
    "Smith",
    "Murphy",
    "Jones",
    "Kelly",
    "Brown",
    "Walsh",
    "Taylor",
    "Patel",
    "Wilson",
    "Chen",
    "Nguyen",
    "Garcia",
    "Evans",
    "Byrne",
    "Khan",
    "Martin",
    "Lee",
    "Clarke",
    "Davies",
    "Ryan",
    "Singh",
    "Lopez",
    "Hughes",
    "Roberts",
    "Young",
    "Scott",
    "Ahmed",
    "Moore",
    "Wright",
    "Cooper",
    "Hall",
    "Green",
    "Ward",
    "Doyle",
    "Price",
]
DOMAINS = ("example.com", "example.net", "example.org")
CHANNEL_PREFS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("email",), 0.25),
    (("sms", "email"), 0.30),
    (("email", "sms"), 0.25),
    (("push", "email"), 0.12),
    (("sms",), 0.08),
)
# how a customer gets in touch when something is wrong
CONTACT_CHANNELS = ("phone", "chat", "email", "web", "social", "store")
CONTACT_WEIGHTS = (0.42, 0.24, 0.18, 0.10, 0.04, 0.02)
SEGMENTS = ("consumer", "small_business")


@dataclass
class Population:
    ids: np.ndarray  # str
    region: np.ndarray  # index into cfg.regions
    plan: np.ndarray  # index into cfg.plans
    segment: np.ndarray  # str
    services: np.ndarray  # bool (customers, services)
    service_index: dict[str, int]
    prepaid: np.ndarray  # bool
    limit_gb: np.ndarray  # float, nan = unlimited
    monthly_fee: np.ndarray  # base fee of the plan
    addon_fee: np.ndarray  # monthly add-on fees (sum)
    bill_day: np.ndarray  # 1..28, day of month the billing cycle starts
    contact_channel: np.ndarray  # str, how they get in touch
    signup_days_before: np.ndarray  # int
    names: list[str]
    emails: list[str]
    phones: list[str]
    channels: list[list[str]]
    consent: list[dict[str, dict[str, bool]]]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ids)

    def has(self, service: str) -> np.ndarray:
        return self.services[:, self.service_index[service]]


def _pick(g: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return g.choice(len(p), size=n, p=p / p.sum())


def generate(cfg: SimConfig) -> Population:
    g = rng(cfg, "customers")
    n = cfg.customers
    width = max(5, len(str(n)))
    ids = np.array([f"C{i:0{width}d}" for i in range(1, n + 1)])
    region = _pick(g, n, [r.weight for r in cfg.regions])
    plan = _pick(g, n, [p.weight for p in cfg.plans])
    segment = np.where(g.random(n) < 0.14, SEGMENTS[1], SEGMENTS[0])
    svc_index = {s.id: i for i, s in enumerate(cfg.services)}
    services = np.zeros((n, len(cfg.services)), dtype=bool)
    for p_i, p in enumerate(cfg.plans):
        rows = plan == p_i
        for s in p.services:
            services[rows, svc_index[s]] = True
    prepaid = np.array([cfg.plans[p].prepaid for p in plan], dtype=bool)
    addon_fee = np.zeros(n)
    for s, (fee, share) in ADDONS.items():
        take = (~prepaid) & (~services[:, svc_index[s]]) & (g.random(n) < share)
        services[take, svc_index[s]] = True
        addon_fee[take] += fee
    limits = np.array([np.nan if p.limit_gb is None else p.limit_gb for p in cfg.plans])
    fees = np.array([p.monthly_fee for p in cfg.plans])
    contact_channel = np.array(CONTACT_CHANNELS)[_pick(g, n, list(CONTACT_WEIGHTS))]
    signup = g.integers(30, 6 * 365, size=n)

    first = g.integers(0, len(FIRST), size=n)
    last = g.integers(0, len(LAST), size=n)
    dom = g.integers(0, len(DOMAINS), size=n)
    digits = g.integers(1_000_000, 9_999_999, size=n)
    pref = _pick(g, n, [w for _, w in CHANNEL_PREFS])
    u = g.random((n, 4))
    names, emails, phones, channels, consent = [], [], [], [], []
    for i in range(n):
        f, last_name = FIRST[first[i]], LAST[last[i]]
        names.append(f"{f} {last_name}")
        emails.append(f"{f.lower()}.{last_name.lower()}{i + 1}@{DOMAINS[dom[i]]}")
        phones.append(f"{cfg.regions[region[i]].phone_prefix}{digits[i]}{i % 1000:03d}")
        channels.append(list(CHANNEL_PREFS[pref[i]][0]))
        c: dict[str, dict[str, bool]] = {"email": {"*": True}, "sms": {"*": True}, "push": {"*": True}}
        if u[i, 0] < 0.35:  # no marketing by email
            c["email"]["marketing"] = False
        if u[i, 1] < 0.10:  # no sms at all
            c["sms"]["*"] = False
        elif u[i, 2] < 0.5:
            c["sms"]["marketing"] = False
        if u[i, 3] < 0.40:  # never opted in to push
            c["push"]["*"] = False
        consent.append(c)
    return Population(
        ids=ids,
        region=region,
        plan=plan,
        segment=segment,
        services=services,
        service_index=svc_index,
        prepaid=prepaid,
        limit_gb=limits[plan],
        monthly_fee=fees[plan],
        addon_fee=addon_fee,
        bill_day=g.integers(1, 29, size=n),
        contact_channel=contact_channel,
        signup_days_before=signup,
        names=names,
        emails=emails,
        phones=phones,
        channels=channels,
        consent=consent,
    )


def services_frame(cfg: SimConfig) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [s.id for s in cfg.services],
            "name": [s.name for s in cfg.services],
            "description": [s.description for s in cfg.services],
        }
    )


def dependencies_frame(cfg: SimConfig, pop: Population) -> pl.DataFrame:
    """Every customer depends on each of their services in their home region."""
    rows, cols = np.nonzero(pop.services)
    regions = np.array([r.name for r in cfg.regions])
    svc = np.array([s.id for s in cfg.services])
    return pl.DataFrame(
        {"customer_id": pop.ids[rows], "service_id": svc[cols], "region": regions[pop.region[rows]]}
    )


def customer_lines(cfg: SimConfig, pop: Population, devices: dict[str, list[str]]) -> list[str]:
    """``customers.jsonl`` lines, in id order."""
    svc_names = [s.id for s in cfg.services]
    out = []
    for i in range(pop.n):
        region = cfg.regions[pop.region[i]]
        plan = cfg.plans[pop.plan[i]]
        cid = str(pop.ids[i])
        attributes: dict[str, Any] = {
            "plan_limit_gb": None if np.isnan(pop.limit_gb[i]) else float(pop.limit_gb[i]),
            "monthly_fee": float(pop.monthly_fee[i] + pop.addon_fee[i]),
            "currency": region.currency,
            "signup_date": (cfg.start - timedelta(days=int(pop.signup_days_before[i]))).isoformat(),
            "billing_day": int(pop.bill_day[i]),
            "prepaid": bool(plan.prepaid),
            "services": [s for j, s in enumerate(svc_names) if pop.services[i, j]],
            "devices": devices.get(cid, []),
        }
        rec = {
            "id": cid,
            "name": pop.names[i],
            "email": pop.emails[i],
            "phone": pop.phones[i],
            "timezone": region.timezone,
            "locale": region.locale,
            "segment": str(pop.segment[i]),
            "plan": plan.name,
            "region": region.name,
            "channels": pop.channels[i],
            "attributes": attributes,
            "consent": pop.consent[i],
        }
        out.append(json.dumps(rec, separators=(",", ":")))
    return out
