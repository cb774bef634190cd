"""claims by priority: the due-time index leads with (status, priority)

A worker now claims critical messages before high, normal and low ones (each in due order), so a backlog of
playbook notices never delays an outage notice. Each (status, priority) pair is one contiguous range of the
new index; it replaces ``ix_outbox_status_due``, so an insert still updates the same number of btrees.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 14:35:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_status_priority_due", "outbox", ["status", "priority", "next_attempt_at"])
    op.drop_index("ix_outbox_status_due", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_status_due", "outbox", ["status", "next_attempt_at"])
    op.drop_index("ix_outbox_status_priority_due", table_name="outbox")
