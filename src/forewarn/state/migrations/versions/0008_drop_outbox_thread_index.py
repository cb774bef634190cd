"""drop the outbox's thread index: thread order is checked through the customer's in-flight rows

A thread is one customer's (one customer per incident or condition), so the claim's "an earlier message of this
thread is still in flight" test probes ``ix_outbox_customer_status_sent`` (customer, status) and compares the
thread key there. The index on the long thread key only cost every insert (a fresh notice now updates 6 btrees).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 15:05:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outbox_thread", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_thread", "outbox", ["thread_key"])
