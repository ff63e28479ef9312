"""Liveness sessions: reference image, client token and connection on sessions; liveness state
and analysed frames.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("reference_key", sa.String(256), nullable=True))
        batch.add_column(sa.Column("client_token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("connection_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("connection_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("connections", sa.Integer(), server_default="0", nullable=False))

    op.create_table(
        "liveness_states",
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("challenges", _JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued", sa.Integer(), nullable=False),
        sa.Column("verdicts", sa.Integer(), nullable=False),
        sa.Column("decision", _JSON, nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_liveness_states_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", name="pk_liveness_states"),
    )
    op.create_table(
        "liveness_frames",
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("storage_key", sa.String(256), nullable=False),
        sa.Column("analysis", _JSON, nullable=False),
        sa.Column("spoof_score", sa.Float(), nullable=True),
        sa.Column("embedding", _JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_liveness_frames_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "sequence", name="pk_liveness_frames"),
    )


def downgrade() -> None:
    op.drop_table("liveness_frames")
    op.drop_table("liveness_states")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("connections")
        batch.drop_column("connection_seen_at")
        batch.drop_column("connection_id")
        batch.drop_column("client_token_hash")
        batch.drop_column("reference_key")
