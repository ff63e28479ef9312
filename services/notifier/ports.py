"""The notifier's ports (small, each with a hand-written fake in the unit tests) and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from contracts.documents import CallDecidedDetails, FlowDecision
from domain.flows import FlowStatus
from infra.db.audit import AuditAction
from infra.db.flows import CallFlowRecord, FollowUp
from infra.publisher import PublishFailed

__all__ = [
    "AuditTrail",
    "CallbackRefused",
    "CallbackSender",
    "CallbackUnreachable",
    "FlowStore",
    "PublishFailed",
    "ReferenceImages",
    "ReferenceSource",
    "ReferencesUnavailable",
]


class ReferencesUnavailable(Exception):
    """The controller's reference list (or every image on it) could not be had."""


class CallbackUnreachable(Exception):
    """The controller could not be reached or timed out (retryable)."""


class CallbackRefused(Exception):
    """The callback URL may not be called (address policy) (permanent)."""


@dataclass(frozen=True)
class ReferenceImages:
    images: list[bytes]
    #: Why some listed references were left out (no URL, no token: only an index and a reason).
    errors: list[str] = field(default_factory=list)


class ReferenceSource(Protocol):
    async def fetch(self, flow: CallFlowRecord) -> ReferenceImages:
        """The controller's reference images; raises ReferencesUnavailable."""
        ...


class CallbackSender(Protocol):
    async def put(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """PUT and return the status code; raises CallbackUnreachable or CallbackRefused."""
        ...


class FlowStore(Protocol):
    """The call flows (``infra.db.flows.CallFlowRepository``; tests/unit/notifier/fakes.py keeps
    its rules in memory). Each transition is taken once: its one winner gets the record back
    (others None), and ``then``'s messages go to the outbox in the same transaction."""

    async def fetch(self, flow_id: str) -> CallFlowRecord | None: ...

    async def by_session(self, session_id: str) -> CallFlowRecord | None: ...

    async def start_matching(
        self,
        flow_id: str,
        *,
        decision: FlowDecision,
        deadline: datetime,
        request_id: str,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None: ...

    async def conclude(
        self,
        flow_id: str,
        *,
        outcome: str,
        status: FlowStatus,
        decision: FlowDecision,
        first_attempt_at: datetime,
        then: FollowUp | None = None,
    ) -> CallFlowRecord | None: ...

    async def claim_attempt(
        self, flow_id: str, attempt: int, *, lease_until: datetime
    ) -> CallFlowRecord | None: ...

    async def mark_delivered(
        self, flow_id: str, attempt: int, *, status_code: int, then: FollowUp | None = None
    ) -> CallFlowRecord | None: ...

    async def retry_later(
        self, flow_id: str, attempt: int, *, at: datetime, error: str, status_code: int | None
    ) -> CallFlowRecord | None: ...

    async def mark_failed(
        self, flow_id: str, attempt: int, *, error: str, status_code: int | None, then: FollowUp | None = None
    ) -> CallFlowRecord | None: ...

    async def overdue(self, *, now: datetime, limit: int = 100) -> list[CallFlowRecord]: ...

    async def claim_due_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[CallFlowRecord]: ...


class AuditTrail(Protocol):
    """The audit log (``infra.db.audit.AuditLog``): one record per decision, no secrets."""

    async def record(
        self,
        *,
        actor: str,
        action: AuditAction,
        subject_id: str | None,
        outcome: str | None,
        details: CallDecidedDetails | None = None,
    ) -> None: ...
