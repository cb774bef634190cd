"""Who an incident affects, derived from data: customers depending on a scoped service in a scoped region.

The set is computed by one ``INSERT .. SELECT`` into ``affected_customers`` (no loop over customers), and only
customers not already recorded are added, so widening an incident returns exactly the newly affected ones.
A scope's region ``*`` means every region. Optionally only customers active recently count: an
:class:`ImpactFilter` stored with the incident says which (e.g. usage in the 30 days before it started), an
:data:`Activity` source (``usage_activity`` reads the signal store) names them, and they are joined through a
temporary table. The service applies the stored filter at the opening and at every widening.

>>> from forewarn.timeutil import utc
>>> IMPACT_SQL.count("INSERT INTO affected_customers")
1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from forewarn.incidents._db import bulk_writes, dialect, sql
from forewarn.timeutil import utc

if TYPE_CHECKING:
    from forewarn.context import Context

# The primary key (incident, customer) drops customers already affected, and a customer reached through two
# scopes once: ON CONFLICT is the set difference, so no GROUP BY or NOT EXISTS pass is needed. The common first
# computation (one service in one region, nothing recorded yet) cannot meet anyone twice and skips the check.
IMPACT_SQL = """
INSERT INTO affected_customers (incident_id, customer_id, service_id, region, added_at)
SELECT :incident_id, d.customer_id, d.service_id, d.region, :now
FROM incident_scopes s
JOIN dependencies d
  ON d.service_id = s.service_id AND (s.region = '*' OR d.region = s.region)
{active_join}
WHERE s.incident_id = :incident_id
{conflict}
"""

ACTIVE_TABLE = "fw_active_customers"
# customer ids with usage in [start, end]: where "recently active" comes from (the signal store, live)
Activity = Callable[[datetime, datetime], Iterable[str]]


@dataclass(frozen=True)
class ImpactFilter:
    """Who counts as affected beyond the scopes; stored with the incident (``incidents.impact_filter``) and
    applied by its opening and by every widening, so the affected set never depends on who widened it.

    ``active_days``: only customers with a usage signal in the N days before the incident started.

    >>> f = ImpactFilter(active_days=30)
    >>> f.as_json(), ImpactFilter.from_json(f.as_json()) == f, ImpactFilter.from_json(None).as_json()
    ({'active_days': 30}, True, None)
    >>> from datetime import datetime, UTC
    >>> [t.day for t in f.window(datetime(2026, 3, 31, tzinfo=UTC))]
    [1, 31]
    """

    active_days: int | None = None

    def __post_init__(self) -> None:
        if self.active_days is not None and self.active_days < 1:
            raise ValueError(f"active_days must be at least 1, got {self.active_days}")

    def as_json(self) -> dict[str, Any] | None:
        """The stored form; ``None`` when nothing filters."""
        return {"active_days": self.active_days} if self.active_days else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ImpactFilter:
        unknown = set(data or {}) - {"active_days"}
        if unknown:
            raise ValueError(f"unknown impact filter field(s) {sorted(unknown)}; expected active_days")
        return cls(**(data or {}))

    def window(self, started_at: datetime) -> tuple[datetime, datetime] | None:
        """The usage window that makes a customer active (the N days before the start), or ``None``."""
        if not self.active_days:
            return None
        end = utc(started_at)
        return end - timedelta(days=self.active_days), end


# refresh the planner's statistics of affected_customers after adding at least this many rows (PostgreSQL)
ANALYZE_AFTER = 10_000


def compute_affected(
    session: Session,
    incident_id: int,
    *,
    active_customers: Iterable[str] | None = None,
    now: datetime | None = None,
) -> int:
    """Add the customers the incident's scopes now reach and were not affected before; return how many.

    ``active_customers``, when given, restricts the impact to those ids (e.g. active in the last N days).
    Everything added here gets ``added_at = now``, which is how widening finds whom to catch up.
    """
    now = utc(now)
    conflict = (
        "ON CONFLICT (incident_id, customer_id) DO NOTHING" if _may_meet_twice(session, incident_id) else ""
    )
    active_join = ""
    if active_customers is not None:
        _load_active(session, active_customers)
        active_join = f"JOIN {ACTIVE_TABLE} act ON act.customer_id = d.customer_id"
    with bulk_writes(session):
        result = session.execute(
            sql(IMPACT_SQL.format(active_join=active_join, conflict=conflict), "now"),
            {"incident_id": incident_id, "now": now},
        )
    added = max(result.rowcount or 0, 0)
    if added >= ANALYZE_AFTER and dialect(session) == "postgresql":
        # the planner's statistics do not know this incident's rows yet: without them it plans the notice
        # fan-out for a handful of customers (index probes per customer, 1.2-1.4x slower at a million as measured)
        session.execute(text("ANALYZE affected_customers"))
    return added


def _may_meet_twice(session: Session, incident_id: int) -> bool:
    """Whether the impact query could reach a customer already recorded or twice: unless the incident has no
    affected customers yet and one scope in one named region (dependencies are unique per customer, service
    and region), each row needs the conflict check (a third of the insert's cost at a million rows)."""
    scopes, wildcard, recorded = session.execute(
        text(
            "SELECT COUNT(*), COALESCE(MAX(CASE WHEN region = '*' THEN 1 ELSE 0 END), 0), "
            "EXISTS (SELECT 1 FROM affected_customers WHERE incident_id = :i) "
            "FROM incident_scopes WHERE incident_id = :i"
        ),
        {"i": incident_id},
    ).one()
    return bool(recorded) or bool(wildcard) or scopes != 1


def _load_active(session: Session, ids: Iterable[str]) -> None:
    """Fill a per-connection temporary table with the active customer ids."""
    if dialect(session) == "postgresql":
        session.execute(
            text(
                f'CREATE TEMP TABLE IF NOT EXISTS {ACTIVE_TABLE} (customer_id VARCHAR(128) COLLATE "C" PRIMARY KEY)'
            )
        )
    else:
        session.execute(
            text(
                f"CREATE TEMP TABLE IF NOT EXISTS {ACTIVE_TABLE} (customer_id TEXT PRIMARY KEY) WITHOUT ROWID"
            )
        )
    session.execute(text(f"DELETE FROM {ACTIVE_TABLE}"))
    batch: list[dict[str, str]] = []
    stmt = text(f"INSERT INTO {ACTIVE_TABLE} (customer_id) VALUES (:c) ON CONFLICT DO NOTHING")
    for cid in ids:
        batch.append({"c": cid})
        if len(batch) >= 50_000:
            session.execute(stmt, batch)
            batch = []
    if batch:
        session.execute(stmt, batch)


def usage_activity(ctx: Context) -> Activity:
    """An :data:`Activity` source over the signal store: customers with any usage signal in [start, end]."""

    def active(start: datetime, end: datetime) -> list[str]:
        frame = ctx.signals.read("usage", start=start, end=end, columns=["customer_id"])
        return frame["customer_id"].unique().to_list()

    return active


def affected_count(session: Session, incident_id: int) -> int:
    """How many customers an incident affects so far."""
    return int(
        session.execute(
            text("SELECT COUNT(*) FROM affected_customers WHERE incident_id = :i"), {"i": incident_id}
        ).scalar_one()
    )
