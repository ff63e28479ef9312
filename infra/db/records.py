"""The API clients' record (never an ORM object). The sessions' and call flows' records are
``domain.records``'s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts.values import SessionStatus

__all__ = ["ApiClient", "SessionStatus"]


@dataclass(frozen=True, slots=True)
class ApiClient:
    """An API client. The key itself is never kept; ``key_prefix`` identifies it in listings."""

    id: str
    name: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    rate_per_second: float
    burst: int
    monthly_quota: int
    #: May read every client's usage (GET /v1/admin/usage).
    admin: bool = False

    @property
    def active(self) -> bool:
        return self.revoked_at is None
