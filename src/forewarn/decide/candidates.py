"""From findings to candidate actions: which playbooks match which findings (live runs and backtests).

The input is a findings frame (``FINDINGS_SCHEMA`` plus ``episode``: when the condition was first seen, and
``at``: when the decision is taken). Matching is vectorised per playbook (Polars), so a backtest over a year
of findings costs one filter per playbook, not one Python call per row.

>>> from datetime import datetime, UTC
>>> from forewarn.decide.playbooks import PlaybookFile
>>> pb = PlaybookFile.model_validate({"playbooks": [{"name": "drop", "mode": "live",
...     "when": {"kind": "usage", "condition": "usage:drop:*", "score": {"gte": 3}},
...     "then": [{"notify": {"template": "playbook_usage"}}]}]}).playbooks[0]
>>> t = datetime(2026, 1, 5, 9, tzinfo=UTC)
>>> f = pl.DataFrame({"customer_id": ["c1", "c2"], "kind": ["usage", "usage"],
...     "condition": ["usage:drop:data_gb", "usage:spike:data_gb"], "ts": [t, t], "score": [4.0, 9.0],
...     "confidence": [0.9, 0.9], "severity": ["warning"] * 2, "topic": ["usage"] * 2,
...     "explanation": ["", ""], "evidence": ["{}", "{}"], "episode": [t, t], "at": [t, t]})
>>> match(f, [pb], {})["customer_id"].to_list()
['c1']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from forewarn.decide.guardrails import Candidate
from forewarn.decide.playbooks import KIND_TOPIC, Playbook, Range

EPISODE_COLUMNS = ("episode", "at")


def glob_regex(pattern: str) -> str:
    """A shell glob (``*``, ``?``) as an anchored regex Polars understands.

    >>> glob_regex("usage:drop:*")
    '^usage:drop:.*$'
    """
    out = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return f"^{out}$"


def _range(col: str, r: Range | None) -> pl.Expr:
    e = pl.lit(True)
    if r is None:
        return e
    if r.gte is not None:
        e &= pl.col(col) >= r.gte
    if r.gt is not None:
        e &= pl.col(col) > r.gt
    if r.lte is not None:
        e &= pl.col(col) <= r.lte
    if r.lt is not None:
        e &= pl.col(col) < r.lt
    return e


def customers_matching(pb: Playbook, customers: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """Customer ids meeting the playbook's customer conditions; ``None`` when it has none."""
    f = pb.when.customer
    if f.segment is None and f.plan is None and f.region is None and not f.attributes:
        return None
    return [cid for cid, c in customers.items() if f.test(dict(c))]


def match(
    findings: pl.DataFrame, playbooks: Iterable[Playbook], customers: Mapping[str, Mapping[str, Any]]
) -> pl.DataFrame:
    """Rows of ``findings`` each playbook (not ``off``) acts on, with a ``playbook`` column.

    A finding matched by two playbooks appears twice."""
    parts = []
    for pb in playbooks:
        if pb.mode == "off":
            continue
        w = pb.when
        e = (pl.col("kind") == w.kind) & _range("score", w.score) & _range("confidence", w.confidence)
        if w.condition is not None:
            e &= pl.col("condition").str.contains(glob_regex(w.condition))
        if w.severity is not None:
            e &= pl.col("severity").is_in(w.severity)
        ids = customers_matching(pb, customers)
        if ids is not None:
            e &= pl.col("customer_id").is_in(ids)
        parts.append(findings.filter(e).with_columns(playbook=pl.lit(pb.name)))
    if not parts:
        return findings.clear().with_columns(playbook=pl.lit("", pl.String))
    return pl.concat(parts, how="vertical")


def first_per_episode(matches: pl.DataFrame) -> pl.DataFrame:
    """The first matching row per (playbook, customer, condition, episode): an episode is decided once."""
    return matches.sort("at").unique(
        ["playbook", "customer_id", "condition", "episode"], keep="first", maintain_order=True
    )


def to_candidates(
    matches: pl.DataFrame,
    playbooks: Mapping[str, Playbook],
    *,
    min_confidence: float,
    preferred_channels: Mapping[str, Sequence[str]] | None = None,
) -> list[Candidate]:
    """One ``Candidate`` per matched row and playbook action.

    A notification tries the customer's own preferred channels first (those the playbook allows), then the
    playbook's order. The expiry runs from the episode's start in data time, carried over to decision time.
    """
    out: list[Candidate] = []
    prefs = preferred_channels or {}
    cols = matches.columns
    for row in matches.iter_rows(named=True):
        pb = playbooks[row["playbook"]]
        at: datetime = row["at"]
        episode: datetime = row["episode"]
        expires = at + (episode + pb.expiry - row["ts"]) if pb.expiry > timedelta(0) else None
        topic = pb.topic_for(row.get("topic") or KIND_TOPIC.get(row["kind"]))
        threshold = pb.min_confidence if pb.min_confidence is not None else min_confidence
        ref = {
            k: row[k]
            for k in ("finding_id", "incident_id", "explanation", "evidence", "severity")
            if k in cols
        }
        for i, action in enumerate(pb.then):
            channels: tuple[str, ...] = ()
            priority = "normal"
            if action.notify is not None:
                allowed = list(action.notify.channels)
                first = [c for c in prefs.get(row["customer_id"], ()) if c in allowed]
                channels = tuple(dict.fromkeys([*first, *allowed]))
                priority = action.notify.priority
            out.append(
                Candidate(
                    customer_id=row["customer_id"],
                    playbook=pb.name,
                    mode=pb.mode,
                    action=action.type,
                    kind=row["kind"],
                    condition=row["condition"],
                    topic=topic,
                    priority=priority,
                    channels=channels,
                    at=at,
                    episode=episode.isoformat(),
                    confidence=float(row["confidence"]),
                    score=float(row["score"]),
                    min_confidence=threshold,
                    holdout=pb.holdout,
                    cooldown=pb.cooldown,
                    expires_at=expires,
                    action_index=i,
                    ref=ref,
                )
            )
    return out
