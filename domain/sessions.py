"""How a liveness session ends: the one rule every entry point applies (pure, no I/O).

Whoever ends a session (the liveness worker deciding it, the worker's expiry command and sweep,
the gateway's lazy expiry on a read, an erasure) asks :func:`end_session` what the ending is:
the terminal status, the result document to store, the SessionFinished event to publish, the
SESSION_DECIDED audit entry to write, and whether the subject's lockout counts it. The
application function that applies it (``infra.lifecycle.SessionLifecycle``) writes the status,
the lockout failure and the audit entry in one version-checked transaction, then publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from contracts.documents import LivenessDecisionDocument, SessionDecidedDetails, SessionResult
from contracts.events import ReferencesMatched, SessionFinished
from contracts.values import SessionStatus

__all__ = [
    "COMPARISON_UNAVAILABLE",
    "ERASED",
    "EXPIRED",
    "SESSION_DECIDED",
    "UNFINISHED",
    "AuditEntry",
    "Decided",
    "Erased",
    "Expired",
    "Outcome",
    "SessionEnding",
    "SessionFacts",
    "counts_toward_lockout",
    "decided_result",
    "end_session",
]

#: Reasons a session ends with besides the decision's own.
EXPIRED: Final = "EXPIRED"
ERASED: Final = "ERASED"
COMPARISON_UNAVAILABLE: Final = "COMPARISON_UNAVAILABLE"
#: The states a session is in before it ends (CREATED, IN_PROGRESS); it ends in exactly one of
#: SUCCEEDED, FAILED, EXPIRED (``SessionStatus.terminal``) and never changes status again.
UNFINISHED: Final = frozenset(status for status in SessionStatus if not status.terminal)
#: The audit action of every ending (``infra.db.audit.AuditAction.SESSION_DECIDED``).
SESSION_DECIDED: Final = "SESSION_DECIDED"


class SessionFacts(Protocol):
    """What the rule reads of a stored session (``domain.records.SessionRecord`` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def status(self) -> SessionStatus: ...
    @property
    def version(self) -> int: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def result(self) -> SessionResult | None: ...
    @property
    def reference_key(self) -> str | None: ...
    @property
    def connections(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Decided:
    """The liveness worker decided: ``decision`` is its stored document (live or not, confidence,
    reasons, the kept images, the challenges). ``comparison``: the matcher's answer;
    ``matcher_late``: it did not come in time."""

    decision: LivenessDecisionDocument
    comparison: ReferencesMatched | None = None
    matcher_late: bool = False


@dataclass(frozen=True, slots=True)
class Expired:
    """Nobody finished the session before its deadline."""


@dataclass(frozen=True, slots=True)
class Erased:
    """Its owner erased it (DELETE) before it finished."""


Outcome = Decided | Expired | Erased


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record: no images, keys or embeddings, only the outcome and its reasons."""

    actor: str
    action: str
    subject_id: str
    outcome: str
    details: SessionDecidedDetails


@dataclass(frozen=True, slots=True)
class SessionEnding:
    """What ending one session means; applied only while the session is still at
    ``expected_version`` (else re-read and ask again)."""

    session_id: str
    expected_version: int
    status: SessionStatus
    #: The result document to store; None: the session keeps none (an expiry).
    result: SessionResult | None
    event: SessionFinished
    audit: AuditEntry
    counts_toward_lockout: bool


def counts_toward_lockout(status: SessionStatus, *, connections: int, erased: bool = False) -> bool:
    """Whether a session ending in ``status`` counts against its subject key and device id.

    A failed decision counts. An erasure (FAILED, ERASED) and an expiry count only when the subject
    actually started: a camera connection was made (``connections`` > 0), so deleting or
    abandoning an attempt does not dodge the count, while a session its user never opened is the
    app's, not an attempt. SUCCEEDED never counts.
    """
    if status is SessionStatus.FAILED and not erased:
        return True
    return status in (SessionStatus.FAILED, SessionStatus.EXPIRED) and connections > 0


def end_session(session: SessionFacts, outcome: Outcome, now: datetime) -> SessionEnding | None:
    """How ``session`` ends with ``outcome`` at ``now``; None when it does not (it has ended
    already, or an expiry comes before its deadline)."""
    if session.status.terminal:
        return None
    if isinstance(outcome, Expired) and session.expires_at > now:
        return None
    status, result, reasons = _ending(session, outcome)
    return SessionEnding(
        session_id=session.id,
        expected_version=session.version,
        status=status,
        result=result,
        event=SessionFinished(
            correlation_id=session.id, session_id=session.id, status=status, reasons=list(reasons)
        ),
        audit=AuditEntry(
            actor=session.owner,
            action=SESSION_DECIDED,
            subject_id=session.id,
            outcome=status.value,
            details=_audit_details(result, reasons),
        ),
        counts_toward_lockout=counts_toward_lockout(
            status, connections=session.connections, erased=isinstance(outcome, Erased)
        ),
    )


def _ending(session: SessionFacts, outcome: Outcome) -> tuple[SessionStatus, SessionResult | None, list[str]]:
    if isinstance(outcome, Expired):
        return SessionStatus.EXPIRED, None, [EXPIRED]
    if isinstance(outcome, Erased):
        erased = SessionResult(is_live=False, reasons=[ERASED])
        if session.result is not None:
            erased = session.result.model_copy(update={"is_live": False, "reasons": [ERASED]})
        return SessionStatus.FAILED, erased, [ERASED]
    result = decided_result(session, outcome)
    status = SessionStatus.SUCCEEDED if result.is_live else SessionStatus.FAILED
    return status, result, list(result.reasons)


def decided_result(session: SessionFacts, outcome: Decided) -> SessionResult:
    """The result document of a decided session: the decision, and the comparison with the
    reference image the app gave (COMPARISON_UNAVAILABLE when there is none to give)."""
    decision = outcome.decision
    reasons = list(decision.reasons)
    similarity: float | None = None
    match: bool | None = None
    comparison = outcome.comparison
    if comparison is not None:
        if comparison.error is not None:
            reasons.append(comparison.error.code.value)
        else:
            similarity, match = comparison.similarity, comparison.match
    elif session.reference_key is not None and (outcome.matcher_late or decision.reference_image_key is None):
        reasons.append(COMPARISON_UNAVAILABLE)
    return SessionResult(
        is_live=decision.is_live,
        confidence=decision.confidence,
        reasons=reasons,
        reference_image_key=decision.reference_image_key,
        audit_image_keys=list(decision.audit_image_keys),
        comparison_result=similarity,
        comparison_match=match,
        challenges=list(decision.challenges),
    )


def _audit_details(result: SessionResult | None, reasons: list[str]) -> SessionDecidedDetails:
    if result is None:
        return SessionDecidedDetails(reasons=list(reasons))
    return SessionDecidedDetails(
        is_live=result.is_live,
        confidence=result.confidence,
        reasons=list(reasons),
        comparison_result=result.comparison_result,
        comparison_match=result.comparison_match,
    )
