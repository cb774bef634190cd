"""The state store: customers, services, incidents, findings, the outbox and tickets (SQLAlchemy + Alembic)."""

from forewarn.state.db import SchemaOutOfDate, make_engine, open_store, schema_status, transaction, upgrade

__all__ = ["SchemaOutOfDate", "make_engine", "open_store", "schema_status", "transaction", "upgrade"]
