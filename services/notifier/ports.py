"""The notifier's ports (small, each with a hand-written fake in the unit tests) and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from contracts.documents import CallDecidedDetails
from domain.records import CallFlowRecord
from infra.db.audit import AuditAction
from infra.publisher import PublishFailed

__all__ = [
    "AuditTrail",
    "CallbackRefused",
    "CallbackSender",
    "CallbackUnreachable",
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
