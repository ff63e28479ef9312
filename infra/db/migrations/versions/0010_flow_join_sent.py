"""When a call flow's JoinCall went to the broker: a redelivered ``call.join`` whose first publish
failed asks a call agent then, and one whose publish went out does not ask twice (two agents in
one room). Flows of before are taken as asked.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("call_flows", sa.Column("join_sent_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE call_flows SET join_sent_at = created_at")


def downgrade() -> None:
    op.drop_column("call_flows", "join_sent_at")
