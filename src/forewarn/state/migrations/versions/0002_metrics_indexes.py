"""indexes for the outcome metrics and the dashboard

Period filters (tickets by opened_at, outbox by created_at / sent_at), "was this customer told before they
called" (outbox by customer, status, sent time), notice progress per incident and decisions per playbook
(covering indexes, so the counts never read the table).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:30:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_outbox_customer_status_sent", "outbox", ["customer_id", "status", "sent_at"]),
    ("ix_outbox_sent_at", "outbox", ["sent_at"]),
    ("ix_outbox_created_at", "outbox", ["created_at"]),
    ("ix_outbox_incident_status", "outbox", ["incident_id", "status"]),
    ("ix_outbox_playbook_status", "outbox", ["playbook", "status"]),
    ("ix_tickets_opened_at", "tickets", ["opened_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
