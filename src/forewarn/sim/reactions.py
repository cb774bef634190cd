"""How customers react to problems: the inbound contacts they open, and which ones a timely notice avoids.

Each generator reports the problems it caused as a *causes* frame (one row per customer and problem: when the
problem reached the customer, ``t0``, and the chance they contact us about it). :func:`draw_contacts` turns
causes into contacts with lognormal delays; each caused contact gets a deterministic ``avoid_draw`` (uniform
0..1) so the counterfactual is reproducible: with a notice sent before the contact's latent time, the contact
is avoided when ``avoid_draw < p_avoid`` (``p_avoid`` per problem type in ``SimConfig.reactions``, e.g. 0.7
for outages, 0.6 for bill shocks, 0.5 for device failures).

The emitted ``contact.jsonl`` is the no-notice baseline; :func:`contacts_given_notices` answers "which of
those contacts would still have happened, had we sent these notices?".
"""

from __future__ import annotations

import numpy as np
import polars as pl

from forewarn.sim.clock import HOUR
from forewarn.sim.config import SimConfig

CAUSES_SCHEMA = pl.Schema(
    {
        "cause_id": pl.String(),
        "type": pl.String(),
        "customer_id": pl.String(),
        "t0": pl.Int64(),  # when the problem reached this customer (us since epoch)
        "service_id": pl.String(),
        "p_contact": pl.Float64(),
        "info": pl.String(),  # a detail for the wording, e.g. "61.20 GBP"
    }
)


def causes(
    cause_id: np.ndarray | list[str],
    type: str,
    customer_id: np.ndarray | list[str],
    t0: np.ndarray,
    p_contact: float | np.ndarray,
    service_id: np.ndarray | list[str | None] | str | None = None,
    info: np.ndarray | list[str | None] | str | None = None,
) -> pl.DataFrame:
    """A causes frame (see ``CAUSES_SCHEMA``); scalars are broadcast.

    >>> causes(["o1"], "outage", ["C1"], np.array([0]), 0.2).height
    1
    """
    n = len(customer_id)

    def col(v: object) -> list[object]:
        if v is None or isinstance(v, str | float | int):
            return [v] * n
        return list(v)  # type: ignore[call-overload]

    return pl.DataFrame(
        {
            "cause_id": list(cause_id),
            "type": [type] * n,
            "customer_id": list(customer_id),
            "t0": np.asarray(t0, dtype=np.int64),
            "service_id": col(service_id),
            "p_contact": np.broadcast_to(np.asarray(p_contact, dtype=float), (n,)).copy(),
            "info": col(info),
        },
        schema=CAUSES_SCHEMA,
    )


def draw_contacts(
    cfg: SimConfig, all_causes: pl.DataFrame, g: np.random.Generator, end_us: int
) -> pl.DataFrame:
    """Which causes lead to a contact, and when (``latent``); contacts after the world ends are dropped.

    Returns the causes that led to contacts with ``latent`` (us), ``avoid_draw`` and ``p_avoid`` added, in a
    stable order.
    """
    df = all_causes.sort(["t0", "cause_id", "customer_id"])
    n = df.height
    types = df["type"].to_numpy()
    median = np.zeros(n)
    sigma = np.zeros(n)
    p_avoid = np.zeros(n)
    for t, r in cfg.reactions.items():
        m = types == t
        median[m], sigma[m], p_avoid[m] = r.delay_median_h, r.delay_sigma, r.p_avoid
    u_contact = g.random(n)
    delay_h = median * np.exp(sigma * g.standard_normal(n))
    avoid_draw = g.random(n)
    latent = df["t0"].to_numpy() + (delay_h * HOUR).astype(np.int64) + 60_000_000  # at least a minute
    keep = (u_contact < df["p_contact"].to_numpy()) & (latent < end_us)
    return df.with_columns(
        pl.Series("latent", latent), pl.Series("avoid_draw", avoid_draw), pl.Series("p_avoid", p_avoid)
    ).filter(pl.Series(keep))


def contacts_given_notices(
    truth: pl.DataFrame, notices: pl.DataFrame, contacts: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The contacts that would still happen had ``notices`` been sent.

    ``truth``: the ground-truth frame (``World.truth`` or ``forewarn.sim.truth.load(path)``); ``notices``: a
    frame of ``(customer_id, cause_id, notified_at)``. A caused contact is avoided when a notice for its
    customer and cause was sent before the contact's latent time and its ``avoid_draw < p_avoid``; background
    contacts and late notices change nothing. With ``contacts`` (the ``contact`` signal frame) the surviving
    contact rows are returned; without, the surviving ground-truth contact records.

    >>> import datetime as dt
    >>> t = pl.DataFrame({"id": ["k1", "k2"], "type": ["contact"] * 2, "customer_id": ["C1", "C1"],
    ...     "start": [dt.datetime(2026, 1, 2, tzinfo=dt.UTC)] * 2, "cause": ["out-01", None],
    ...     "avoid_draw": [0.1, None], "p_avoid": [0.7, None]})
    >>> n = pl.DataFrame({"customer_id": ["C1"], "cause_id": ["out-01"],
    ...     "notified_at": [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]})
    >>> contacts_given_notices(t, n)["id"].to_list()
    ['k2']
    """
    tc = truth.filter(pl.col("type") == "contact")
    if not {"customer_id", "cause_id", "notified_at"} <= set(notices.columns):
        raise ValueError("notices needs the columns customer_id, cause_id, notified_at")
    first = (
        notices.select(
            pl.col("customer_id").cast(pl.String),
            pl.col("cause_id").cast(pl.String).alias("cause"),
            pl.col("notified_at").cast(pl.Datetime("us", "UTC")),
        )
        .group_by(["customer_id", "cause"])
        .agg(pl.col("notified_at").min())
    )
    joined = tc.join(first, on=["customer_id", "cause"], how="left")
    avoided = (
        pl.col("cause").is_not_null()
        & pl.col("notified_at").is_not_null()
        & (pl.col("notified_at") < pl.col("start"))
        & (pl.col("avoid_draw") < pl.col("p_avoid"))
    )
    kept = joined.filter(~avoided.fill_null(False)).drop("notified_at")
    if contacts is None:
        return kept.select(tc.columns)
    return contacts.filter(pl.col("event_id").is_in(kept["id"].implode()))
