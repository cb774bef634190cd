"""a leaner outbox and affected-customers table for large fan-outs

An outage notice fans out to a million rows in one statement; every btree and every foreign-key trigger on
the target tables is paid per row, and on PostgreSQL the foreign-key checks alone were ~30% of the fan-out's
CPU (measured on 200k notices). So:

- Indexes that only ever serve rows with a value become partial (``WHERE col IS NOT NULL``): sent-time
  (only sent rows have one), playbook (incident notices have none) and finding. Their queries all compare
  the column, which implies ``IS NOT NULL``, so SQLite and PostgreSQL still use them; a fresh pending incident
  notice now updates 7 btrees instead of 10.
- The foreign keys of ``outbox`` (customer, incident, finding, ticket) and ``affected_customers`` (customer,
  incident) become delete triggers on the parent tables with the same effect: deleting (erasing) a customer
  deletes their outbox rows and affected-customer rows, deleting an incident deletes its affected customers
  and clears ``outbox.incident_id``, deleting a finding or ticket clears the outbox reference. What is no
  longer checked is the insert: the producers write these rows from customers and incidents they just read.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (index, columns, the column whose presence it needs)
PARTIAL = (
    ("ix_outbox_sent_status_customer", ["sent_at", "status", "customer_id"], "sent_at"),
    ("ix_outbox_playbook_status", ["playbook", "status"], "playbook"),
    ("ix_outbox_finding_id", ["finding_id"], "finding_id"),
)

# (table, constraint, column, parent, on delete)
FOREIGN_KEYS = (
    ("outbox", "fk_outbox_customer_id_customers", "customer_id", "customers", "CASCADE"),
    ("outbox", "fk_outbox_incident_id_incidents", "incident_id", "incidents", "SET NULL"),
    ("outbox", "fk_outbox_finding_id_findings", "finding_id", "findings", "SET NULL"),
    ("outbox", "fk_outbox_ticket_id_tickets", "ticket_id", "tickets", "SET NULL"),
    (
        "affected_customers",
        "fk_affected_customers_customer_id_customers",
        "customer_id",
        "customers",
        "CASCADE",
    ),
    (
        "affected_customers",
        "fk_affected_customers_incident_id_incidents",
        "incident_id",
        "incidents",
        "CASCADE",
    ),
)


def _actions(parent: str) -> list[str]:
    """What deleting a ``parent`` row does to the children, as statements on ``OLD.id``."""
    out = []
    for table, _, column, referred, ondelete in FOREIGN_KEYS:
        if referred != parent:
            continue
        if ondelete == "CASCADE":
            out.append(f"DELETE FROM {table} WHERE {column} = OLD.id;")
        else:
            out.append(f"UPDATE {table} SET {column} = NULL WHERE {column} = OLD.id;")
    return out


PARENTS = ("customers", "incidents", "findings", "tickets")


def _create_triggers() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for parent in PARENTS:
        name = f"fw_{parent}_deleted"
        body = "\n    ".join(_actions(parent))
        if pg:
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n    {body}\n    RETURN OLD;\nEND $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER DELETE ON {parent} FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        else:
            op.execute(f"CREATE TRIGGER {name} AFTER DELETE ON {parent} FOR EACH ROW BEGIN\n    {body}\nEND")


def _drop_triggers() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for parent in PARENTS:
        name = f"fw_{parent}_deleted"
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {parent}" if pg else ""))
        if pg:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def upgrade() -> None:
    for table in ("outbox", "affected_customers"):
        # SQLite cannot drop a constraint in place: batch mode copies the table without it (before the
        # partial indexes exist, so the copy need not reproduce their predicates)
        with op.batch_alter_table(table) as batch:
            for t, constraint, *_ in FOREIGN_KEYS:
                if t == table:
                    batch.drop_constraint(constraint, type_="foreignkey")
    for name, columns, column in PARTIAL:
        op.drop_index(name, table_name="outbox")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "outbox", columns, sqlite_where=where, postgresql_where=where)
    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    for name, columns, _ in reversed(PARTIAL):
        op.drop_index(name, table_name="outbox")
        op.create_index(name, "outbox", columns)
    for table in ("outbox", "affected_customers"):
        with op.batch_alter_table(table) as batch:
            for t, constraint, column, referred, ondelete in FOREIGN_KEYS:
                if t == table:
                    batch.create_foreign_key(constraint, referred, [column], ["id"], ondelete=ondelete)
