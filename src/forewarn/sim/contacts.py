"""Inbound contacts: caused ones (from :mod:`forewarn.sim.reactions`) and a background of unrelated ones,
worded the way customers write: several templates per problem, paraphrased openers, frustration levels,
the odd typo or all-lowercase chat message, and agent notes for phone calls.

Agents tag phone and chat contacts with a topic (their wrap-up code); email, web and social contacts arrive
untagged (``topic`` null), as they do in practice.

>>> import numpy as np
>>> g = np.random.default_rng(0)
>>> subject, text = word(g, "outage", "broadband", "uk-north", "chat", 2)
>>> isinstance(text, str) and len(text) > 10
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from forewarn.sim.clock import US, epoch_us, local_to_utc_us, region_offsets, rng, to_datetime
from forewarn.sim.config import SimConfig
from forewarn.sim.customers import CONTACT_CHANNELS, Population

SERVICE_WORDS = {
    "broadband": ("internet", "broadband", "wifi", "connection", "fibre"),
    "mobile": ("mobile data", "phone signal", "4G", "mobile"),
    "tv": ("TV", "tv box", "channels", "TV service"),
    "voip": ("landline", "home phone", "phone line"),
    "email": ("email", "mailbox", "work email"),
    None: ("service", "account"),
}
WHEN = (
    "this morning",
    "about an hour ago",
    "20 minutes ago",
    "since lunch",
    "tonight",
    "a while ago",
    "just now",
)

TOPIC = {
    "outage": "outage",
    "maintenance": "outage",
    "bill_shock": "billing",
    "billing_error": "billing",
    "card_expiry": "billing",
    "device_failure": "device",
    "shipment_delay": "shipping",
    "usage_drop": "usage",
    "usage_spike": "usage",
    "level_shift": "usage",
    "near_limit": "usage",
    "renewal_due": "account",
}

# (subject, body) per problem; {svc} {when} {area} {info} are filled in
PHRASES: dict[str, list[tuple[str, str]]] = {
    "outage": [
        ("{Svc} down", "My {svc} is down. Not working since {when}."),
        ("Outage?", "Is there an outage in {area}? My {svc} stopped working {when}."),
        ("No service", "No {svc} at all, I've restarted everything twice."),
        ("{Svc} not working", "{svc} keeps dropping out and now it's completely dead."),
        ("Can't connect", "Can't connect to anything, {svc} just stopped {when}."),
        ("Service problem", "Nothing is loading, is something wrong with your {svc} in {area}?"),
    ],
    "maintenance": [
        (
            "{Svc} went off last night",
            "My {svc} went off in the middle of the night, was something going on?",
        ),
        ("Overnight outage", "Lost {svc} overnight for a couple of hours, nobody told me about any work."),
        ("Service interrupted", "{svc} was down early this morning. Is it fixed now?"),
    ],
    "bill_shock": [
        ("Bill much higher", "My bill is much higher than usual, can someone explain?"),
        ("Unexpected charges", "There are charges on my invoice I don't understand ({info})."),
        ("Why is my bill so high", "Why has my bill jumped this month? Looks like {info}."),
        ("Invoice question", "Just got my invoice and it's way more than normal."),
    ],
    "billing_error": [
        ("Wrong bill", "I think my bill is wrong: {info}."),
        ("Charged incorrectly", "You've charged me for something that isn't right ({info})."),
        ("Invoice error", "There's a mistake on my latest invoice, {info}."),
    ],
    "card_expiry": [
        ("Payment failed", "I got a message that my payment failed."),
        ("Payment declined", "Why was my payment declined? I need to update my card I think."),
        ("Update card", "How do I change the card on my account, the payment didn't go through."),
    ],
    "device_failure": [
        ("TV box broken", "My TV box won't turn on any more."),
        ("Recorder stopped working", "The recorder stopped working and all my recordings are gone."),
        ("Box keeps rebooting", "The tv box keeps rebooting and now it shows a disk error."),
        ("Device fault", "My {info} box died {when}, it just shows a blank screen."),
    ],
    "shipment_delay": [
        ("Where is my order", "Where is my order? It was supposed to arrive yesterday."),
        ("Parcel not arrived", "My parcel hasn't arrived and tracking just says delayed."),
        ("Late delivery", "Delivery is late, I stayed home all day for it."),
    ],
    "usage_drop": [
        ("Very slow", "{svc} has been super slow for days."),
        ("Speed dropped", "Speeds have dropped a lot, barely usable."),
        ("Connection poor", "Barely any {svc} lately, pages time out."),
    ],
    "usage_spike": [
        ("Usage jumped", "Why did my data usage jump? I didn't use that much."),
        ("Usage meter wrong?", "The usage meter shows way more than I used ({info} normal)."),
    ],
    "level_shift": [
        ("Usage changed", "My usage has changed a lot recently, is someone using my wifi?"),
        ("Usage question", "The usage on my account looks very different from before."),
    ],
    "near_limit": [
        ("Out of data", "I've run out of data before the end of the month."),
        ("Throttled", "Got a message I'm over my {info} allowance and now it's slow."),
        ("Data allowance", "How can I be over my allowance already?"),
    ],
    "renewal_due": [
        ("Contract ending", "My contract is ending soon, what are my options?"),
        ("Renewal price", "What will I pay when my contract renews?"),
        ("Contract end", "Contract is up next week, I want to discuss a better deal."),
    ],
}
BACKGROUND: list[tuple[str, str, str]] = [
    ("account", "Moving house", "I'm moving house next month, how do I transfer my service?"),
    ("account", "Wifi password", "How do I change my wifi password?"),
    ("account", "Add a line", "Can I add another mobile line to my account?"),
    ("billing", "Bill question", "Quick question about how my bill is calculated."),
    ("account", "Change email", "Please update the email address on my account."),
    ("account", "Voicemail", "How do I set up voicemail?"),
    ("account", "Channels", "What channels are included in my package?"),
    ("account", "Password reset", "I can't log in to my account, need a password reset."),
    ("account", "Upgrade", "I'd like to upgrade my plan, what is available?"),
    ("billing", "Direct debit", "Can I change the date my direct debit comes out?"),
    ("device", "Router lights", "What does the orange light on the router mean?"),
    ("account", "Cancel", "Thinking about cancelling, what is the notice period?"),
]
OPENERS = ("", "Hi, ", "Hello, ", "Hi there. ", "Good morning, ", "Hey ")
CLOSERS = {
    0: ("", " Thanks.", " Can you check please?", " Thank you!"),
    1: (" This is really annoying.", " I work from home and need this sorted.", " Please fix asap."),
    2: (
        " Third time this month!!",
        " Absolutely ridiculous, I pay for this.",
        " Sort it out or I'm leaving.",
    ),
}
AGENT = ("Cust called: ", "Caller reports: ", "Customer on phone - ", "Inbound call. ")
AGENT_END = (" Advised restart.", " Ticket raised.", " Escalated to 2nd line.", " Explained, cust ok.", "")


def _typo(g: np.random.Generator, text: str) -> str:
    words = text.split(" ")
    i = int(g.integers(0, len(words)))
    w = words[i]
    if len(w) > 3:
        j = int(g.integers(0, len(w) - 1))
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :] if g.random() < 0.5 else w[:j] + w[j + 1 :]
    return " ".join(words)


def word(
    g: np.random.Generator,
    kind: str,
    service: str | None,
    area: str | None,
    channel: str,
    frustration: int,
    info: str | None = None,
) -> tuple[str, str]:
    """(subject, text) for a contact about ``kind`` (a ground-truth type; ``bg:<index>`` for background)."""
    if kind.startswith("bg:"):
        _, subject, body = BACKGROUND[int(kind[3:])]
    else:
        subject, body = PHRASES[kind][int(g.integers(0, len(PHRASES[kind])))]
    words = SERVICE_WORDS.get(service, SERVICE_WORDS[None])
    svc = words[int(g.integers(0, len(words)))]
    info_text = _info(info)
    fill = {
        "svc": svc,
        "Svc": svc[:1].upper() + svc[1:],
        "when": WHEN[int(g.integers(0, len(WHEN)))],
        "area": f"the {area} area" if area and g.random() < 0.5 else "my area",
        "info": info_text,
    }
    subject, body = subject.format(**fill), body.format(**fill)
    # a routine question is asked calmly, whatever the customer's mood
    closers = CLOSERS[0 if kind.startswith("bg:") else frustration]
    if channel == "phone":
        text = AGENT[int(g.integers(0, len(AGENT)))] + body + AGENT_END[int(g.integers(0, len(AGENT_END)))]
    else:
        opener = OPENERS[int(g.integers(0, len(OPENERS)))]
        if opener.endswith(", ") and not body.startswith(("I ", "I'")):
            body = body[:1].lower() + body[1:]
        text = opener + body + closers[int(g.integers(0, len(closers)))]
        if g.random() < 0.15:
            text = _typo(g, text)
        if channel in ("chat", "social") and g.random() < 0.3:
            text = text.lower()
        if frustration == 2 and g.random() < 0.3:
            text = text.replace(".", "!")
    return subject, text.strip()


def _info(info: str | None) -> str:
    if not info:
        return "something looks off"
    return {
        "roaming": "roaming charges I didn't expect",
        "overage": "a big data charge",
        "price_change": "the price went up without warning",
        "duplicate_line": "I've been charged twice for my plan",
        "usage_mismatch": "the data overage is wrong, I didn't use that much",
    }.get(
        info,
        info.replace("unsubscribed_service:", "charged for ").replace("_", " ")
        + (" which I don't have" if info.startswith("unsubscribed_service:") else ""),
    )


@dataclass
class ContactResult:
    frame: pl.DataFrame
    truth: list[dict[str, Any]]
    meta: pl.DataFrame  # event_id, customer_id, ts (us), caused (bool), frustration: for surveys


def build(cfg: SimConfig, pop: Population, caused: pl.DataFrame) -> ContactResult:
    """Word the caused contacts (``reactions.draw_contacts`` output) and add background contacts."""
    g = rng(cfg, "contacts")
    index = {str(c): i for i, c in enumerate(pop.ids)}
    region_names = [r.name for r in cfg.regions]

    # background: Poisson count, uniform customer and day, local office-ish hours
    n_bg = int(g.poisson(cfg.background_contacts_per_day * cfg.customers * cfg.days))
    bc = g.integers(0, pop.n, size=n_bg)
    bd = g.integers(0, cfg.days, size=n_bg)
    bts = local_to_utc_us(cfg, region_offsets(cfg), pop.region[bc], bd, g.uniform(8, 21, size=n_bg))
    keep = (bts >= epoch_us(cfg.start_dt)) & (bts < epoch_us(cfg.end))
    bg = pl.DataFrame(
        {
            "cause_id": [None] * n_bg,
            "type": [f"bg:{k}" for k in g.integers(0, len(BACKGROUND), size=n_bg)],
            "customer_id": pop.ids[bc],
            "service_id": [None] * n_bg,
            "info": [None] * n_bg,
            "latent": bts,
            "avoid_draw": [None] * n_bg,
            "p_avoid": [None] * n_bg,
        },
        schema={
            "cause_id": pl.String,
            "type": pl.String,
            "customer_id": pl.String,
            "service_id": pl.String,
            "info": pl.String,
            "latent": pl.Int64,
            "avoid_draw": pl.Float64,
            "p_avoid": pl.Float64,
        },
    ).filter(pl.Series(keep))
    cols = ["cause_id", "type", "customer_id", "service_id", "info", "latent", "avoid_draw", "p_avoid"]
    allc = pl.concat([caused.select(cols), bg]).with_columns((pl.col("latent") // US * US).alias("latent"))
    allc = allc.sort(["latent", "customer_id", "type"], maintain_order=True)

    rows, truth = [], []
    bg_count: dict[str, int] = {}
    for r in allc.iter_rows(named=True):
        cid = r["customer_id"]
        c = index[cid]
        channel = str(pop.contact_channel[c]) if g.random() < 0.7 else CONTACT_CHANNELS[int(g.integers(0, 5))]
        frustration = int(g.choice(3, p=[0.5, 0.35, 0.15] if r["cause_id"] else [0.8, 0.17, 0.03]))
        kind = r["type"]
        subject, text = word(
            g, kind, r["service_id"], region_names[pop.region[c]], channel, frustration, r["info"]
        )
        if r["cause_id"]:
            # outages and maintenance reach many customers; every other cause belongs to one customer
            shared = kind in ("outage", "maintenance")
            event_id = f"k-{r['cause_id']}-{cid}" if shared else f"k-{r['cause_id']}"
            true_topic = TOPIC[kind]
        else:
            bg_count[cid] = bg_count.get(cid, 0) + 1
            event_id = f"k-bg-{cid}-{bg_count[cid]}"
            true_topic = BACKGROUND[int(kind[3:])][0]
        tagged = channel in ("phone", "chat", "store")
        rows.append(
            {
                "event_id": event_id,
                "customer_id": cid,
                "ts": r["latent"],
                "channel": channel,
                "subject": None if channel == "phone" else subject,
                "text": text,
                "topic": true_topic if tagged else None,
                "service_id": r["service_id"] if tagged else None,
                "frustration": frustration,
            }
        )
        truth.append(
            {
                "id": event_id,
                "type": "contact",
                "customer_id": cid,
                "service_id": r["service_id"],
                "regions": [],
                "start": r["latent"],
                "end": None,
                "detectable_from": r["latent"],
                "details": {
                    "channel": channel,
                    "topic": true_topic,
                    "cause_type": None if kind.startswith("bg:") else kind,
                    "frustration": frustration,
                },
                "affected": [],
                "cause": r["cause_id"],
                "avoid_draw": r["avoid_draw"],
                "p_avoid": r["p_avoid"],
            }
        )
    schema = {
        "event_id": pl.String,
        "customer_id": pl.String,
        "ts": pl.Int64,
        "channel": pl.String,
        "subject": pl.String,
        "text": pl.String,
        "topic": pl.String,
        "service_id": pl.String,
        "frustration": pl.Int64,
    }
    df = pl.DataFrame(rows, schema=schema)
    meta = df.select(
        "event_id",
        "customer_id",
        "ts",
        "frustration",
        (pl.col("event_id").str.starts_with("k-bg-").not_()).alias("caused"),
    )
    frame = df.drop("frustration").with_columns(to_datetime(df["ts"]))
    return ContactResult(frame=frame, truth=truth, meta=meta)


# how long the helpdesk takes to solve a contact's ticket, by channel (median hours): live channels settle most
# things at once, written ones wait for an answer
_SOLVE_MEDIAN_H = {"phone": 2.0, "chat": 1.0, "store": 1.0, "email": 20.0, "web": 30.0, "social": 8.0}


def ticket_updates(cfg: SimConfig, contacts: pl.DataFrame) -> pl.DataFrame:
    """The helpdesk's side of each contact: its ticket solved after a lognormal delay (a few left unsolved, as
    real queues have), as ``ticket_update`` rows; updates after the simulated period are not emitted."""
    g = rng(cfg, "ticket-updates")
    n = contacts.height
    median_h = np.array([_SOLVE_MEDIAN_H.get(c, 12.0) for c in contacts["channel"].to_list()])
    delay_us = (median_h * np.exp(g.normal(0.0, 1.0, size=n)) * 3600 * US).astype(np.int64)
    ts = contacts["ts"].dt.epoch("us").to_numpy() + delay_us
    keep = (g.random(n) >= 0.05) & (ts < epoch_us(cfg.end))
    out = pl.DataFrame(
        {
            "event_id": [f"tu-{e}" for e in contacts["event_id"].to_list()],
            "customer_id": contacts["customer_id"],
            "ts": ts,
            "ticket_id": contacts["event_id"],
            "status": ["solved"] * n,
        }
    ).filter(pl.Series(keep))
    return out.with_columns(to_datetime(out["ts"])).sort(["ts", "event_id"])
