"""Declarative tables. Any change here needs a new migration in ``infra/db/migrations/versions``;
``tests/integration/test_db_migrations.py`` fails while the two disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_MONTHLY_QUOTA",
    "DEFAULT_RATE_PER_SECOND",
    "ApiClientRow",
    "AuditEventRow",
    "Base",
    "BrokerUserRow",
    "CallFlowRow",
    "LivenessFailureRow",
    "LivenessFrameRow",
    "LivenessStateRow",
    "OutboxRow",
    "ProcessedCommandRow",
    "RateBucketRow",
    "SessionRow",
    "UsageRow",
    "UtcDateTime",
    "utc_now",
]

DEFAULT_RATE_PER_SECOND = 50.0
DEFAULT_BURST = 100
DEFAULT_MONTHLY_QUOTA = 100_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone; we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# none_as_null: Python None is SQL NULL, not the JSON literal null.
JsonDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


# Named constraints keep future migrations (and SQLite batch mode) deterministic.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UtcDateTime,
        dict[str, Any]: JsonDocument,
    }


class ApiClientRow(Base):
    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(12), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    rate_per_second: Mapped[float] = mapped_column(
        Float, default=DEFAULT_RATE_PER_SECOND, server_default=str(DEFAULT_RATE_PER_SECOND)
    )
    burst: Mapped[int] = mapped_column(Integer, default=DEFAULT_BURST, server_default=str(DEFAULT_BURST))
    monthly_quota: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_MONTHLY_QUOTA, server_default=str(DEFAULT_MONTHLY_QUOTA)
    )
    #: May read every client's usage (GET /v1/admin/usage).
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("owner", "client_request_token"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    client_request_token: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The app's reference image (object key), compared with the live reference frame.
    reference_key: Mapped[str | None] = mapped_column(String(256))
    # SHA-256 of the short-lived token the hosted page uses (never the token itself).
    client_token_hash: Mapped[str | None] = mapped_column(String(64))
    # The WebRTC connection streaming now (one at a time), kept alive by the call agent.
    connection_id: Mapped[str | None] = mapped_column(String(36))
    connection_seen_at: Mapped[datetime | None]
    connections: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the session's biometric data (frames, images, embeddings) was erased (retention, DELETE).
    purged_at: Mapped[datetime | None] = mapped_column(index=True)
    # The erasure tombstone (DELETE): set before anything is deleted; every writer checks it.
    erase_requested_at: Mapped[datetime | None] = mapped_column(index=True)


def session_erased(row: Any) -> bool:
    """Whether nothing may be stored for a session any more: its erasure was requested, its data
    was purged (retention), or there is no such session (``row`` is ``None``). ``row``: anything
    with ``erase_requested_at`` and ``purged_at`` (a ``SessionRow``, a selected row)."""
    return row is None or row.erase_requested_at is not None or row.purged_at is not None


class LivenessStateRow(Base):
    """The liveness worker's state of a session; locked (FOR UPDATE) while a frame is applied."""

    __tablename__ = "liveness_states"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    #: The drawn challenges: [{"type": ..., "target": [x, y] | null}, ...]
    challenges: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    #: How many ChallengeIssued / ChallengeVerdict events were written to the outbox (none twice).
    issued: Mapped[int] = mapped_column(Integer, default=0)
    verdicts: Mapped[int] = mapped_column(Integer, default=0)
    #: The decision once made (isLive, confidence, reasons, referenceKey, auditKeys).
    decision: Mapped[dict[str, Any] | None]
    decided_at: Mapped[datetime | None]
    #: The MatchReferences sent for the decision: only the answer to it is accepted.
    match_request_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)


class LivenessFrameRow(Base):
    """One analysed frame. ``embedding`` is biometric: erased with the session's data."""

    __tablename__ = "liveness_frames"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    captured_at: Mapped[datetime]
    storage_key: Mapped[str] = mapped_column(String(256))
    analysis: Mapped[dict[str, Any]]
    spoof_score: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[dict[str, Any] | None]


class CallFlowRow(Base):
    """A video-call flow (POST /join-call, /v1/calls): its liveness session, its one callback.

    ``outcome`` is set once (a conditional update claims it), then ``delivery`` goes PENDING ->
    DELIVERED or FAILED; ``next_attempt_at`` is when the notifier's sweeper (re)sends the flow's
    next step: its FetchReferences while it fetches its references (MATCHING, no
    ``match_request_id``), its callback once it has an outcome.
    ``token`` is the controller's (never logged); ``callback_secret`` is never returned.
    """

    __tablename__ = "call_flows"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    ws_url: Mapped[str] = mapped_column(String(2048))
    callback_base_url: Mapped[str] = mapped_column(String(2048))
    datastore_base_url: Mapped[str | None] = mapped_column(String(2048))
    token: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]]
    callback_secret: Mapped[str | None] = mapped_column(String(256))
    deadline: Mapped[datetime] = mapped_column(index=True)
    decision: Mapped[dict[str, Any] | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    delivery: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))
    status_code: Mapped[int | None] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    #: The MatchReferences sent when the flow started MATCHING: only the answer to it is accepted.
    match_request_id: Mapped[str | None] = mapped_column(String(64))
    #: When its JoinCall went to the broker (None: not yet, its publish failed).
    join_sent_at: Mapped[datetime | None]


class RateBucketRow(Base):
    """A client's token bucket (steady rate and burst), shared by every gateway replica."""

    __tablename__ = "rate_buckets"

    client_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime]


class UsageRow(Base):
    """Requests counted against a client's monthly quota (``period`` is ``YYYY-MM``, UTC)."""

    __tablename__ = "usage"

    client_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class LivenessFailureRow(Base):
    """A failed liveness session for a subject key or device id (lockout), without biometrics."""

    __tablename__ = "liveness_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(128), index=True)
    session_id: Mapped[str] = mapped_column(String(36))
    failed_at: Mapped[datetime] = mapped_column(index=True)


class AuditEventRow(Base):
    """Who asked for what, when, and the outcome; never images, embeddings, tokens or keys."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None]


class BrokerUserRow(Base):
    """A RabbitMQ user of an upstream system, and the API client its public commands act for."""

    __tablename__ = "broker_users"

    user_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("api_clients.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]


class ProcessedCommandRow(Base):
    """A public command the ingress took (one per client and message id: duplicates run once)."""

    __tablename__ = "processed_commands"

    client_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    command: Mapped[str] = mapped_column(String(64))
    #: RUNNING while being handled, then DONE or REJECTED.
    status: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]


class OutboxRow(Base):
    """A message that follows a state change, written in the same transaction (infra/outbox.py);
    the relay publishes the unsent ones in ``id`` order and sets ``sent_at``."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_sent_at_id", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The message's own id (its ``message_id`` on the broker): consumers dedupe by it.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange: Mapped[str] = mapped_column(String(64))
    routing_key: Mapped[str] = mapped_column(String(255))
    correlation_id: Mapped[str] = mapped_column(String(128), index=True)
    payload: Mapped[dict[str, Any]]
    headers: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    #: Failed publishing attempts so far, and the last error (a type name, no payload).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
