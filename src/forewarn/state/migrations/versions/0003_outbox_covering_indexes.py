"""covering indexes for notices and deliveries in a period

The period counts (notices sent, deliveries by status, per customer segment) read only these indexes
instead of looking up every outbox row they cover: measured on 400k outbox rows they were the slowest part
of the overview.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 11:56:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
    op.drop_index("ix_outbox_created_at", table_name="outbox")
    op.create_index("ix_outbox_sent_status_customer", "outbox", ["sent_at", "status", "customer_id"])
    op.create_index("ix_outbox_created_status_customer", "outbox", ["created_at", "status", "customer_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_created_status_customer", table_name="outbox")
    op.drop_index("ix_outbox_sent_status_customer", table_name="outbox")
    op.create_index("ix_outbox_created_at", "outbox", ["created_at"])
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])
