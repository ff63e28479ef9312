"""Video-call flows: the flow, its liveness session, its decision and its one callback's delivery.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "call_flows",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ws_url", sa.String(2048), nullable=False),
        sa.Column("callback_base_url", sa.String(2048), nullable=False),
        sa.Column("datastore_base_url", sa.String(2048), nullable=True),
        sa.Column("token", sa.String(512), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("settings", _JSON, nullable=False),
        sa.Column("callback_secret", sa.String(256), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", _JSON, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("delivery", sa.String(16), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_call_flows_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_call_flows"),
    )
    op.create_index("ix_call_flows_session_id", "call_flows", ["session_id"])
    op.create_index("ix_call_flows_deadline", "call_flows", ["deadline"])
    op.create_index("ix_call_flows_next_attempt_at", "call_flows", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_call_flows_next_attempt_at", table_name="call_flows")
    op.drop_index("ix_call_flows_deadline", table_name="call_flows")
    op.drop_index("ix_call_flows_session_id", table_name="call_flows")
    op.drop_table("call_flows")
