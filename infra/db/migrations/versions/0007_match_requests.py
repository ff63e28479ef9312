"""The matcher requests a session or call flow is waiting for: an answer (ReferencesMatched) is
accepted only when it carries the id of the request that was issued (trust boundary).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("liveness_states", sa.Column("match_request_id", sa.String(64), nullable=True))
    op.add_column("call_flows", sa.Column("match_request_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("call_flows", "match_request_id")
    op.drop_column("liveness_states", "match_request_id")
