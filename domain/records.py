"""The stored sessions and call flows as the repositories return them: plain frozen records, no
SQL and no ORM objects (``infra.db`` reads and writes them; the ports in ``domain.ports`` return
them; the unit tests' fakes build them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts.documents import FlowDecision, FlowSettingsDocument, SessionResult, SessionSettingsDocument
from contracts.values import SessionStatus
from domain.flows import DeliveryStatus, FlowStatus, fetching

__all__ = ["CallFlowRecord", "SessionRecord"]


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


@dataclass(frozen=True, slots=True)
class CallFlowRecord:
    id: str
    owner: str
    session_id: str
    status: FlowStatus
    ws_url: str
    callback_base_url: str
    datastore_base_url: str | None
    token: str
    language: str
    settings: FlowSettingsDocument
    callback_secret: str | None
    deadline: datetime
    decision: FlowDecision | None
    outcome: str | None
    delivery: DeliveryStatus | None
    attempts: int
    last_error: str | None
    status_code: int | None
    #: When the sweeper sends the flow's FetchReferences (while fetching) or callback again.
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    delivered_at: datetime | None
    #: The MatchReferences sent when the flow started MATCHING (only its answer is accepted).
    match_request_id: str | None = None
    #: When its JoinCall went to the broker (None: not yet; its publish failed).
    join_sent_at: datetime | None = None

    @property
    def fetching(self) -> bool:
        """Fetching its references (MATCHING, no MatchReferences sent yet: domain.flows)."""
        return fetching(self.status, self.outcome, self.match_request_id)

    def __repr__(self) -> str:  # the controller's token and the secret stay out of logs
        return f"CallFlowRecord(id={self.id!r}, status={self.status.value}, delivery={self.delivery})"
