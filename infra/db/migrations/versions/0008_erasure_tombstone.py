"""Erasure as a tombstone: ``sessions.erase_requested_at`` is set before anything is deleted, so
every writer (call agent frames, liveness images) can refuse an erased session, and the
reconciler retries an erasure whose purge failed (``purged_at`` still unset).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("erase_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_sessions_erase_requested_at", ["erase_requested_at"])


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_erase_requested_at")
        batch.drop_column("erase_requested_at")
