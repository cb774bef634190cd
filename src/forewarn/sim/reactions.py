"""How customers react to problems: the inbound contacts they open, and which ones a timely notice avoids.

Each generator reports the problems it caused as a *causes* frame (one row per customer and problem: when the
problem reached the customer, ``t0``, and the chance they contact us about it). :func:`draw_contacts` turns
causes into contacts with lognormal delays; each caused contact gets a deterministic ``avoid_draw`` (uniform
0..1) so the counterfactual is reproducible: with a notice sent before the contact's latent time, the contact
is avoided when ``avoid_draw < p_avoid`` (``p_avoid`` per problem type in ``SimConfig.reactions``, e.g. 0.7
for outages, 0.6 for bill shocks, 0.5 for device failures).

The emitted ``contact.jsonl`` is the no-notice baseline; ``contacts_given_notices`` (defined with the ground
truth's format in :mod:`forewarn.measure.truth`) answers "which of those contacts would still have happened, had
we sent these notices?".
"""

from __future__ import annotations

import numpy as np
import polars as pl

from forewarn.measure.truth import contacts_given_notices
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


__all__ = ["CAUSES_SCHEMA", "causes", "contacts_given_notices", "draw_contacts"]
