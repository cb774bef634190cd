"""The state store's tables: who the customers are, what they depend on, and what forewarn did about it.

Every change to these models needs an Alembic revision in ``state/migrations/versions``
(``forewarn db revision -m "..."`` autogenerates one); the store refuses to run on an out-of-date schema.
Times are stored as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so that migrations are stable across SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC that always comes back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: forewarn stores timezone-aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def key(length: int) -> String:
    """An identifier or code column (ids, keys, channels, statuses): compared byte by byte on both stores.

    PostgreSQL would otherwise compare such text by the database's locale (``strcoll``); on the outage fan-out
    that was a quarter of the server's CPU (every btree insert and probe compares keys). SQLite compares bytes
    already (BINARY), so ids also sort the same on both stores. Migration 0009 set it on existing columns.

    >>> from sqlalchemy.dialects import postgresql
    >>> str(key(32).compile(dialect=postgresql.dialect()))
    'VARCHAR(32) COLLATE "C"'
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _present(name: str, *columns: str) -> Index:
    """An index over the rows whose first column has a value (a comparison on it implies ``IS NOT NULL``, so
    both stores use it for those queries; rows without a value cost it nothing)."""
    where = text(f"{columns[0]} IS NOT NULL")
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(key(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    locale: Mapped[str] = mapped_column(String(16), default="en")
    segment: Mapped[str | None] = mapped_column(String(64), index=True)
    plan: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(key(64), index=True)
    # preferred channels in order, e.g. ["sms", "email"]
    channels: Mapped[list[Any]] = mapped_column(default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    consents: Mapped[list[Consent]] = relationship(back_populates="customer", cascade="all, delete-orphan")


class Consent(Base):
    """Consent per channel and topic. Topic ``*`` covers every topic without its own row."""

    __tablename__ = "consents"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(key(32), primary_key=True)
    topic: Mapped[str] = mapped_column(key(64), primary_key=True, default="*")
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str | None] = mapped_column(String(64))  # "import", "unsubscribe-link", "api"...
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="consents")


class Service(Base):
    __tablename__ = "services"

    id: Mapped[str] = mapped_column(key(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=True)  # shown on the status page


class Dependency(Base):
    """A customer depends on a service in a region (the region where they consume it)."""

    __tablename__ = "dependencies"
    __table_args__ = (Index("ix_dependencies_service_region", "service_id", "region"),)

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    region: Mapped[str] = mapped_column(key(64), primary_key=True)


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # idempotency for incidents opened by machines (Alertmanager groupKey, monitor name, detector key)
    external_key: Mapped[str | None] = mapped_column(key(512), unique=True)
    title: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(key(32), default="investigating", index=True)
    severity: Mapped[str] = mapped_column(key(32), default="major")  # minor, major, critical
    source: Mapped[str] = mapped_column(
        String(64), default="api"
    )  # api, alertmanager, monitor, detector, sim
    public_message: Mapped[str | None] = mapped_column(Text)
    eta: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column()
    # who counts as affected beyond the scopes (``incidents.impact.ImpactFilter``), reused by every widening
    impact_filter: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # migration 0010
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    scopes: Mapped[list[IncidentScope]] = relationship(cascade="all, delete-orphan")
    updates: Mapped[list[IncidentUpdate]] = relationship(
        cascade="all, delete-orphan", order_by="IncidentUpdate.seq"
    )


class IncidentScope(Base):
    """A service (in a region, or ``*`` for every region) an incident affects; incidents widen by adding scopes."""

    __tablename__ = "incident_scopes"

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), primary_key=True)
    region: Mapped[str] = mapped_column(key(64), primary_key=True, default="*")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentUpdate(Base):
    """A public update in an incident's series; seq 0 is the opening notice."""

    __tablename__ = "incident_updates"
    __table_args__ = (UniqueConstraint("incident_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(key(32))
    message: Mapped[str] = mapped_column(Text)
    eta: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AffectedCustomer(Base):
    """Who an incident affects, computed from dependencies as a set; kept so widening catches up only new ones.

    No foreign keys (a fan-out adds a million rows at once; migration 0006): delete triggers on ``customers``
    and ``incidents`` remove a deleted customer's or incident's rows, as ``ON DELETE CASCADE`` did.
    """

    __tablename__ = "affected_customers"
    __table_args__ = (Index("ix_affected_customers_customer", "customer_id"),)

    incident_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(key(128), primary_key=True)
    service_id: Mapped[str] = mapped_column(key(128))
    region: Mapped[str] = mapped_column(key(64))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Finding(Base):
    """What a trip wire noticed about one customer. An ongoing condition is one open finding, updated."""

    __tablename__ = "findings"
    __table_args__ = (
        # one open finding per condition; closed ones are history
        Index(
            "uq_findings_open_condition",
            "customer_id",
            "kind",
            "condition",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_findings_kind_status", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(key(64))  # trip wire: usage, cadence, billing, devices, schedule...
    condition: Mapped[str] = mapped_column(key(256))  # what exactly, e.g. "usage:drop:data_gb", "device:D17"
    status: Mapped[str] = mapped_column(key(16), default="open")  # open, closed
    score: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(key(16), default="info")  # info, warning, critical
    explanation: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_detected_at: Mapped[datetime] = mapped_column()  # the signal time (as_of) it was first seen
    last_detected_at: Mapped[datetime] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OutboxMessage(Base):
    """One message to one customer on one channel: the transactional outbox the delivery worker drains.

    status: pending -> sending -> sent | failed (will retry) -> dead; or suppressed / deferred / held / shadow,
    decided before delivery, always with a ``reason``.

    Built for million-row fan-outs (migration 0006): indexes that only serve rows with a value are partial, and
    the references carry no foreign keys; delete triggers on the parent tables keep ``ON DELETE`` behaviour
    (a deleted customer's messages are deleted; a deleted incident, finding or ticket is cleared here).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # claims take the due rows of one status and priority in due order (migration 0007)
        Index("ix_outbox_status_priority_due", "status", "priority", "next_attempt_at"),
        # for the outcome metrics and the dashboard (migration 0002)
        Index("ix_outbox_customer_status_sent", "customer_id", "status", "sent_at"),
        # only sent rows have a sent time (0003, partial since 0006)
        _present("ix_outbox_sent_status_customer", "sent_at", "status", "customer_id"),
        Index("ix_outbox_created_status_customer", "created_at", "status", "customer_id"),  # 0003
        Index("ix_outbox_incident_status", "incident_id", "status"),
        _present("ix_outbox_playbook_status", "playbook", "status"),  # incident notices have no playbook
        _present("ix_outbox_finding_id", "finding_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # receivers drop duplicates by this key; also makes enqueueing idempotent
    idempotency_key: Mapped[str] = mapped_column(key(256), unique=True)
    # no single-column index: ix_outbox_customer_status_sent leads with it (migration 0004)
    customer_id: Mapped[str] = mapped_column(key(128))
    channel: Mapped[str] = mapped_column(key(32))
    address: Mapped[str | None] = mapped_column(String(320))
    topic: Mapped[str] = mapped_column(key(64))  # consent topic: outage, billing, usage, device, marketing...
    thread_key: Mapped[str] = mapped_column(key(256))  # one thread per customer per condition / incident
    priority: Mapped[str] = mapped_column(key(16), default="normal")  # critical, high, normal, low
    subject: Mapped[str] = mapped_column(String(512), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(key(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # no single-column index: ix_outbox_incident_status leads with it (migration 0004)
    incident_id: Mapped[int | None] = mapped_column(Integer)
    finding_id: Mapped[int | None] = mapped_column(Integer)
    ticket_id: Mapped[int | None] = mapped_column(Integer)
    playbook: Mapped[str | None] = mapped_column(key(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


def _opened_at(context: Any) -> datetime:
    """A new ticket's last activity is its contact, unless given."""
    return context.get_current_parameters()["opened_at"]


class Ticket(Base):
    """An inbound contact (call, email, chat...), linked to a known incident or finding where one explains it.

    Its status follows ``ticket_update`` signals and the API; whether its case is open at a time is decided by
    ``forewarn.state.tickets.is_open`` (status and idle time), the one definition live and backtests share.
    """

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_customer_opened", "customer_id", "opened_at"),
        Index("ix_tickets_opened_at", "opened_at"),  # migration 0002
        Index("ix_tickets_status_activity", "status", "last_activity_at"),  # migration 0010: the idle sweep
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(key(256), unique=True)  # the contact signal's event_id
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(key(32))
    subject: Mapped[str] = mapped_column(String(512), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    topic: Mapped[str | None] = mapped_column(key(64), index=True)
    status: Mapped[str] = mapped_column(key(16), default="open")  # open, pending, solved, closed
    opened_at: Mapped[datetime] = mapped_column()
    # the time of the latest event (the contact, then each status change): the idle clock (migration 0010)
    last_activity_at: Mapped[datetime] = mapped_column(default=_opened_at)
    closed_at: Mapped[datetime | None] = mapped_column()
    sla_due_at: Mapped[datetime | None] = mapped_column()
    first_response_at: Mapped[datetime | None] = mapped_column()
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("findings.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateBucket(Base):
    """A per-channel token bucket shared by every delivery worker (:mod:`forewarn.deliver.ratelimit`)."""

    __tablename__ = "rate_buckets"

    channel: Mapped[str] = mapped_column(key(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)  # wall clock, epoch seconds: shared across hosts


class ApiToken(Base):
    """An API token (:mod:`forewarn.state.tokens`): only the SHA-256 of the secret is kept, never the secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(key(16))  # the token's first characters, to recognise it in lists
    token_hash: Mapped[str] = mapped_column(key(64), unique=True)  # hex SHA-256 of the whole token
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    # requests per second; None: the settings' default
    rate_limit: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()  # throttled: written at most once a minute
    revoked_at: Mapped[datetime | None] = mapped_column()


class AuditEntry(Base):
    """One change a person or token made (:mod:`forewarn.state.audit`); append-only (triggers refuse changes)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)  # "token:12", "user:alice", "cli:root"
    action: Mapped[str] = mapped_column(key(64), index=True)  # "incident.opened", "token.revoked"...
    target: Mapped[str | None] = mapped_column(String(255))  # "incident:42", "token:12"
    ip: Mapped[str | None] = mapped_column(String(64))  # the client's address; None for the CLI
    detail: Mapped[dict[str, Any] | None] = mapped_column()


class StoredSecret(Base):
    """A signing secret generated at set-up (:mod:`forewarn.state.secrets`), with the one it replaced."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(key(64), primary_key=True)  # "links", "webhooks"
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    previous_value: Mapped[str | None] = mapped_column(String(200))
    previous_until: Mapped[datetime | None] = mapped_column()  # the previous value is accepted until then


class User(Base):
    """A person who signs in to the dashboard; role viewer (reads), agent (acts), admin (manages users)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(key(128), unique=True)
    # an argon2id hash (argon2-cffi); None for people who only come through a trusted proxy header
    password_hash: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(key(16), default="viewer")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()


class UserSession(Base):
    """A signed-in browser. Only a hash of the cookie's token is kept; expiry is decided here, not by the
    cookie, and signing out deletes the row."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(key(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    address: Mapped[str | None] = mapped_column(String(64))


class LoginFailure(Base):
    """A failed sign-in, counted per user name and per client address to slow down password guessing."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_at", "username", "at"),
        Index("ix_login_failures_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(key(128))
    address: Mapped[str] = mapped_column(key(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
