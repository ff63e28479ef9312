"""Plain records returned by the repositories (never ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts.documents import SessionResult, SessionSettingsDocument
from contracts.values import SessionStatus

__all__ = ["ApiClient", "SessionRecord", "SessionStatus"]


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


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    owner: str
    client_request_token: str | None
    kind: str
    status: SessionStatus
    settings: SessionSettingsDocument
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    result: SessionResult | None
    version: int
    reference_key: str | None = None
    client_token_hash: str | None = None
    connection_id: str | None = None
    connection_seen_at: datetime | None = None
    connections: int = 0
    purged_at: datetime | None = None
    #: Erasure requested (DELETE): no writer stores anything for the session any more.
    erase_requested_at: datetime | None = None
