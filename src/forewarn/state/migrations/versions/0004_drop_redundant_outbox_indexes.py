"""drop the outbox's single-column customer and incident indexes

``ix_outbox_customer_id`` and ``ix_outbox_incident_id`` are prefixes of ``ix_outbox_customer_status_sent``
and ``ix_outbox_incident_status`` (migration 0002): every lookup by customer or incident (the metrics, the
foreign keys' cascades) can use the composite index, so the single-column copies only cost every insert two
more index updates: a million-notice fan-out maintained 12 outbox indexes, now 10.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:40:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_customer_id", table_name="outbox")
    op.drop_index("ix_outbox_incident_id", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_incident_id", "outbox", ["incident_id"])
    op.create_index("ix_outbox_customer_id", "outbox", ["customer_id"])
