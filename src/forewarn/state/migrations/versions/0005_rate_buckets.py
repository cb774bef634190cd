"""per-channel token buckets in the state store, shared by every delivery worker

Rate limits were token buckets inside each worker process, so N workers sharing an outbox sent up to N times a
provider's limit. The buckets now live in ``rate_buckets`` (one row per limited channel).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 14:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
