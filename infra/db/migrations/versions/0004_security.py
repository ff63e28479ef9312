"""Security and retention: rate buckets, monthly usage, liveness failures (lockout), the audit log,
and when a session's biometric data was erased.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("purged_at", _TS, nullable=True))
        batch.create_index("ix_sessions_purged_at", ["purged_at"])
    op.create_table(
        "rate_buckets",
        sa.Column("client_key", sa.String(100), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("client_key", name="pk_rate_buckets"),
    )
    op.create_table(
        "usage",
        sa.Column("client_key", sa.String(100), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("client_key", "period", name="pk_usage"),
    )
    op.create_table(
        "liveness_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("failed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_liveness_failures"),
    )
    op.create_index("ix_liveness_failures_subject", "liveness_failures", ["subject"])
    op.create_index("ix_liveness_failures_failed_at", "liveness_failures", ["failed_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("details", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_subject_id", "audit_events", ["subject_id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("liveness_failures")
    op.drop_table("usage")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_purged_at")
        batch.drop_column("purged_at")
