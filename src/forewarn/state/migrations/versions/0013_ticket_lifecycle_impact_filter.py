"""ticket lifecycle (last activity) and an incident's stored impact filter

Tickets were inserted ``open`` and never closed. A ticket now records the time of its latest event
(``last_activity_at``: the contact, then each status change), from which ``forewarn.state.tickets`` decides
whether its case is open (status and idle time). Existing tickets start from their contact (or close) time.

Incidents keep the filter that decided who is affected (``impact_filter``, e.g. ``{"active_days": 30}``), so a
widening applies the same filter the incident was opened with.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 02:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incidents", sa.Column("impact_filter", sa.JSON(), nullable=True))
    op.add_column("tickets", sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE tickets SET last_activity_at = COALESCE(closed_at, opened_at)")
    if op.get_bind().dialect.name == "postgresql":
        # in place; SQLite could only copy the table (dropping its delete trigger, migration 0006): there the
        # models fill the column on every insert
        op.alter_column(
            "tickets", "last_activity_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
    op.create_index("ix_tickets_status_activity", "tickets", ["status", "last_activity_at"])


def downgrade() -> None:
    op.drop_index("ix_tickets_status_activity", table_name="tickets")
    op.drop_column("tickets", "last_activity_at")
    op.drop_column("incidents", "impact_filter")
