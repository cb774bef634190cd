"""identifier and code columns compare byte by byte on PostgreSQL (COLLATE "C")

Ids, keys, channels, topics and statuses are opaque codes, not words: they need no locale. Under the database's
locale every btree insert and probe on them went through ``strcoll``; on the outage fan-out (a million notices,
six btrees each) that was a quarter of the server's CPU. SQLite compares bytes already, so after this both stores
order ids the same way. Columns that are joined to each other (every customer id, service id, region, channel,
topic) change together: PostgreSQL refuses to compare two columns of different collations.

Only the collation changes: PostgreSQL keeps the rows and rebuilds the indexes on these columns (on a large store
that takes a while; run it in a maintenance window). SQLite: nothing to do.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:40:00
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# table -> (column, varchar length); frozen here (not read from the models) so the revision never drifts
COLUMNS: dict[str, list[tuple[str, int]]] = {
    "customers": [("id", 128), ("region", 64)],
    "consents": [("customer_id", 128), ("channel", 32), ("topic", 64)],
    "services": [("id", 128)],
    "dependencies": [("customer_id", 128), ("service_id", 128), ("region", 64)],
    "incidents": [("external_key", 512), ("status", 32), ("severity", 32)],
    "incident_scopes": [("service_id", 128), ("region", 64)],
    "incident_updates": [("status", 32)],
    "affected_customers": [("customer_id", 128), ("service_id", 128), ("region", 64)],
    "findings": [("customer_id", 128), ("kind", 64), ("condition", 256), ("status", 16), ("severity", 16)],
    "outbox": [
        ("idempotency_key", 256),
        ("customer_id", 128),
        ("channel", 32),
        ("topic", 64),
        ("thread_key", 256),
        ("priority", 16),
        ("status", 16),
        ("playbook", 128),
    ],
    "tickets": [("external_id", 256), ("customer_id", 128), ("channel", 32), ("topic", 64), ("status", 16)],
    "rate_buckets": [("channel", 32)],
}


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        changes = ", ".join(
            f'ALTER COLUMN "{name}" TYPE VARCHAR({length}) COLLATE {collation}' for name, length in columns
        )
        op.execute(f'ALTER TABLE "{table}" {changes}')


def upgrade() -> None:
    _collate('"C"')


def downgrade() -> None:
    _collate("pg_catalog.default")
