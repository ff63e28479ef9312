"""The public broker API: RabbitMQ users mapped to API clients, and the public commands taken
(one row per client and message id, so a duplicate runs once).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "broker_users",
        sa.Column("user_name", sa.String(100), nullable=False),
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_clients.id"],
            name="fk_broker_users_client_id_api_clients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_name", name="pk_broker_users"),
    )
    op.create_index("ix_broker_users_client_id", "broker_users", ["client_id"])
    op.create_table(
        "processed_commands",
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("client_id", "message_id", name="pk_processed_commands"),
    )
    op.create_index("ix_processed_commands_received_at", "processed_commands", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_commands_received_at", table_name="processed_commands")
    op.drop_table("processed_commands")
    op.drop_index("ix_broker_users_client_id", table_name="broker_users")
    op.drop_table("broker_users")
