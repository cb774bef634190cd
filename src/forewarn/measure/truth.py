"""Ground truth to score against: one record per known event (an outage, a bill shock, a caused contact...).

The simulator writes it (``ground_truth.jsonl``, :mod:`forewarn.sim.truth`); a business that labels its own
history can write the same format. This module is the production side: the format, its reader, and the
scores that need it (which contacts a notice avoided). Production code reads truth here, never from the
simulator.

Caused contacts carry ``cause``, ``avoid_draw`` and ``p_avoid``: with a notice sent before the contact's time,
the contact is avoided when ``avoid_draw < p_avoid`` (a reproducible counterfactual).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from forewarn.state.models import OutboxMessage

TIME_FIELDS = ("start", "end", "detectable_from")

TRUTH_SCHEMA = pl.Schema(
    {
        "id": pl.String(),
        "type": pl.String(),
        "customer_id": pl.String(),
        "service_id": pl.String(),
        "regions": pl.List(pl.String()),
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "detectable_from": pl.Datetime("us", "UTC"),
        "cause": pl.String(),
        "avoid_draw": pl.Float64(),
        "p_avoid": pl.Float64(),
        "details": pl.String(),  # JSON object
        "affected": pl.String(),  # JSON list
    }
)


def load(path: Path) -> pl.DataFrame:
    """Read ``ground_truth.jsonl`` back into the frame :func:`frame` builds."""
    cols: dict[str, list[Any]] = {k: [] for k in TRUTH_SCHEMA}
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            j = json.loads(line)
            for k in TRUTH_SCHEMA:
                v = j.get(k)
                if k in ("details", "affected"):
                    v = json.dumps(v, separators=(",", ":"))
                cols[k].append(v)
    df = pl.DataFrame(
        {k: v for k, v in cols.items() if k not in TIME_FIELDS},
        schema={k: t for k, t in TRUTH_SCHEMA.items() if k not in TIME_FIELDS},
    )
    for k in TIME_FIELDS:
        df = df.with_columns(
            pl.Series(k, cols[k], dtype=pl.String)
            .str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us")
            .dt.replace_time_zone("UTC")
        )
    return df.select(list(TRUTH_SCHEMA))


def contacts_given_notices(
    truth: pl.DataFrame, notices: pl.DataFrame, contacts: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The contacts that would still happen had ``notices`` been sent.

    ``truth``: the ground-truth frame (``World.truth`` or ``load(path)``); ``notices``: a
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


def contacts_avoided(
    session: Session, incident_id: int, truth: Any, cause_id: str, *, delivered_only: bool = True
) -> dict[str, Any]:
    """With ground truth: inbound contacts the incident's notices avoided, against the no-notice baseline.

    ``truth`` is the ground truth (:func:`load`), ``cause_id`` the true outage this incident is about. Each
    affected customer's first notice (delivered; or queued when ``delivered_only`` is false) is handed to
    :func:`contacts_given_notices`, which says which caused contacts would still happen.
    """
    column = OutboxMessage.sent_at if delivered_only else OutboxMessage.created_at
    rows = session.execute(
        select(OutboxMessage.customer_id, func.min(column))
        .where(
            OutboxMessage.incident_id == incident_id,
            OutboxMessage.ticket_id.is_(None),
            OutboxMessage.status != "suppressed",
            column.is_not(None),
        )
        .group_by(OutboxMessage.customer_id)
    ).all()
    notices = pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "cause_id": [cause_id] * len(rows),
            "notified_at": [r[1] for r in rows],
        },
        schema={"customer_id": pl.String, "cause_id": pl.String, "notified_at": pl.Datetime("us", "UTC")},
    )
    caused = truth.filter((pl.col("type") == "contact") & (pl.col("cause") == cause_id))
    kept = contacts_given_notices(truth, notices).filter(pl.col("cause") == cause_id)
    return {
        "cause_id": cause_id,
        "notices": len(rows),
        "contacts_without_notices": caused.height,
        "contacts_with_notices": kept.height,
        "avoided": caused.height - kept.height,
    }
