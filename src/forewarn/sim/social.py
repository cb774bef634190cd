"""Feedback: social posts (some about outages, while they happen), reviews, and survey answers after contacts.

Surveys follow a contact by one to two days for ``p_survey_answer`` of contacts: CSAT (1-5, 5 = very
satisfied) or CES (1-7, 7 = very easy). Contacts caused by a problem, and frustrated ones, score lower.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from forewarn.sim.clock import US, epoch_us, local_to_utc_us, region_offsets, rng, to_datetime
from forewarn.sim.config import SimConfig
from forewarn.sim.contacts import SERVICE_WORDS
from forewarn.sim.customers import Population
from forewarn.sim.outages import OutageResult

OUTAGE_POSTS = (
    "@ExampleTel is your {svc} down in {region}? nothing works here #outage",
    "{svc} down AGAIN. great job @ExampleTel",
    "anyone else in {region} with no {svc}?? @ExampleTel",
    "@ExampleTel {svc} outage for an hour now, any update?",
)
GENERAL_POSTS = (
    ("Switched to @ExampleTel last year, fibre has been solid", 5.0),
    ("@ExampleTel support sorted my router in 5 minutes, thanks", 5.0),
    ("Why is @ExampleTel so expensive compared to everyone else", 2.0),
    ("@ExampleTel app keeps logging me out", 2.0),
    ("Watching the match on @ExampleTel TV, picture is great", 4.0),
    ("@ExampleTel customer service on hold 40 minutes today", 1.0),
    ("New @ExampleTel plan is decent value", 4.0),
)
SCHEMA = {
    "event_id": pl.String,
    "customer_id": pl.String,
    "ts": pl.Int64,
    "source": pl.String,
    "text": pl.String,
    "rating": pl.Float64,
    "survey": pl.String,
}


def generate(cfg: SimConfig, pop: Population, outages: OutageResult, contacts: pl.DataFrame) -> pl.DataFrame:
    """``contacts``: the contact meta frame (event_id, customer_id, ts, frustration, caused)."""
    g = rng(cfg, "social")
    end = epoch_us(cfg.end)
    rows: list[dict] = []
    for d in outages.disruptions:
        if d.type != "outage":
            continue
        svc = cfg.services[d.service].id
        for r, added in d.regions:
            who = np.nonzero(pop.services[:, d.service] & (pop.region == r))[0]
            posters = who[g.random(len(who)) < cfg.p_outage_social_post]
            for c in posters:
                ts = added + int(20 * 60 * np.exp(0.8 * g.standard_normal())) * US
                if ts >= end:
                    continue
                words = SERVICE_WORDS[svc]
                text = OUTAGE_POSTS[int(g.integers(0, len(OUTAGE_POSTS)))].format(
                    svc=words[int(g.integers(0, len(words)))], region=cfg.regions[r].name
                )
                rows.append(
                    {
                        "event_id": f"f-post-{d.id}-{pop.ids[c]}",
                        "customer_id": str(pop.ids[c]),
                        "ts": ts,
                        "source": "social",
                        "text": text,
                        "rating": None,
                        "survey": None,
                    }
                )
    n_bg = int(g.poisson(cfg.social_posts_per_day * cfg.customers * cfg.days))
    bc = g.integers(0, pop.n, size=n_bg)
    bd = g.integers(0, cfg.days, size=n_bg)
    bts = local_to_utc_us(cfg, region_offsets(cfg), pop.region[bc], bd, g.uniform(7, 24, size=n_bg))
    for k in range(n_bg):
        if not epoch_us(cfg.start_dt) <= bts[k] < end:
            continue
        text, stars = GENERAL_POSTS[int(g.integers(0, len(GENERAL_POSTS)))]
        review = g.random() < 0.3
        rows.append(
            {
                "event_id": f"f-bg-{k}",
                "customer_id": str(pop.ids[bc[k]]),
                "ts": int(bts[k]),
                "source": "review" if review else "social",
                "text": text,
                "rating": stars if review else None,
                "survey": None,
            }
        )
    for r in contacts.iter_rows(named=True):
        if g.random() >= cfg.p_survey_answer:
            continue
        ts = r["ts"] + int(g.uniform(24, 48) * 3600) * US
        if ts >= end:
            continue
        penalty = (1.0 if r["caused"] else 0.0) + 0.7 * r["frustration"]
        if g.random() < 0.7:
            rating, survey = float(np.clip(round(4.4 - penalty + g.normal(0, 0.8)), 1, 5)), "csat"
        else:
            rating, survey = float(np.clip(round(6.0 - 1.5 * penalty + g.normal(0, 1.0)), 1, 7)), "ces"
        rows.append(
            {
                "event_id": f"f-survey-{r['event_id']}",
                "customer_id": r["customer_id"],
                "ts": ts,
                "source": "survey",
                "text": None,
                "rating": rating,
                "survey": survey,
            }
        )
    df = pl.DataFrame(rows, schema=SCHEMA).sort(["ts", "event_id"])
    return df.with_columns(to_datetime(df["ts"]))
