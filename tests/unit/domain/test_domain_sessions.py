"""The one rule that ends a session (domain/sessions.py): what each outcome ends in, what is
published and audited, and which endings count toward the subject's lockout. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.documents import LivenessDecisionDocument, SessionResult
from contracts.events import ReferencesMatched
from contracts.values import ErrorCode, ErrorInfo, ModelInfo, SessionStatus
from domain.sessions import (
    COMPARISON_UNAVAILABLE,
    SESSION_DECIDED,
    Decided,
    Erased,
    Expired,
    counts_toward_lockout,
    end_session,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
MODEL = ModelInfo(pack="p", licence="MIT", commercial_use=True)
# A decision as the liveness worker stored it before contracts/documents.py (camelCase).
LEGACY_DECISION: dict[str, Any] = {
    "isLive": True,
    "confidence": 0.93,
    "reasons": [],
    "referenceKey": "sessions/s1/reference.jpg",
    "auditKeys": ["sessions/s1/audit-0.jpg"],
    "challenges": [{"type": "BLINK", "status": "PASSED"}],
}
DECISION = LivenessDecisionDocument.from_row(LEGACY_DECISION)


@dataclass(frozen=True)
class Session:
    id: str = "s1"
    owner: str = "client-a"
    status: SessionStatus = SessionStatus.IN_PROGRESS
    version: int = 3
    expires_at: datetime = NOW + timedelta(minutes=1)
    result: SessionResult | None = None
    reference_key: str | None = None
    connections: int = 1


def _answer(**fields: Any) -> ReferencesMatched:
    return ReferencesMatched(
        correlation_id="s1", request_id="r1", client_id="client-a", model=MODEL, **fields
    )


def test_a_live_decision_ends_succeeded_with_its_result_event_and_audit() -> None:
    ending = end_session(Session(), Decided(DECISION), NOW)
    assert ending is not None
    assert ending.status is SessionStatus.SUCCEEDED and ending.expected_version == 3
    assert ending.result is not None
    assert ending.result.to_row() == {
        "version": 1,
        "is_live": True,
        "confidence": 0.93,
        "reasons": [],
        "reference_image_key": "sessions/s1/reference.jpg",
        "audit_image_keys": ["sessions/s1/audit-0.jpg"],
        "comparison_result": None,
        "comparison_match": None,
        "challenges": [{"type": "BLINK", "status": "PASSED", "reason": None}],
    }
    assert ending.event.session_id == "s1" and ending.event.status is SessionStatus.SUCCEEDED
    assert ending.event.reasons == []
    assert ending.audit.action == SESSION_DECIDED and ending.audit.actor == "client-a"
    assert ending.audit.subject_id == "s1" and ending.audit.outcome == "SUCCEEDED"
    assert ending.audit.details.is_live is True and ending.audit.details.confidence == 0.93
    assert not ending.counts_toward_lockout


def test_a_failed_decision_ends_failed_and_counts_toward_the_lockout() -> None:
    decision = DECISION.model_copy(update={"is_live": False, "reasons": ["SPOOF"]})
    ending = end_session(Session(connections=1), Decided(decision), NOW)
    assert ending is not None and ending.status is SessionStatus.FAILED
    assert ending.event.reasons == ["SPOOF"] and ending.audit.details.reasons == ["SPOOF"]
    assert ending.counts_toward_lockout


def test_the_comparison_joins_the_result_or_its_error_the_reasons() -> None:
    session = Session(reference_key="sessions/s1/reference-input.jpg")
    matched = end_session(session, Decided(DECISION, _answer(similarity=0.81, match=True)), NOW)
    assert matched is not None and matched.result is not None
    assert matched.result.comparison_result == 0.81 and matched.result.comparison_match is True
    assert matched.audit.details.comparison_match is True
    error = ErrorInfo(code=ErrorCode.NO_FACE_IN_REFERENCES, detail="no face in the reference")
    failed = end_session(session, Decided(DECISION, _answer(error=error)), NOW)
    assert failed is not None and failed.event.reasons == ["NO_FACE_IN_REFERENCES"]
    late = end_session(session, Decided(DECISION, matcher_late=True), NOW)
    assert late is not None and late.event.reasons == [COMPARISON_UNAVAILABLE]
    assert late.status is SessionStatus.SUCCEEDED  # live; the comparison is what is missing
    no_frame = end_session(session, Decided(DECISION.scrubbed()), NOW)
    assert no_frame is not None and no_frame.event.reasons == [COMPARISON_UNAVAILABLE]
    # without a reference image of the app's, nothing is missing
    plain = end_session(Session(), Decided(DECISION, matcher_late=True), NOW)
    assert plain is not None and plain.event.reasons == []


def test_an_overdue_session_expires_without_a_result() -> None:
    ending = end_session(Session(expires_at=NOW), Expired(), NOW)
    assert ending is not None and ending.status is SessionStatus.EXPIRED and ending.result is None
    assert ending.event.reasons == ["EXPIRED"]
    assert ending.audit.outcome == "EXPIRED" and ending.audit.details.reasons == ["EXPIRED"]
    assert ending.audit.details.is_live is None


def test_a_session_before_its_deadline_does_not_expire() -> None:
    assert end_session(Session(expires_at=NOW + timedelta(seconds=1)), Expired(), NOW) is None


@pytest.mark.parametrize("status", [SessionStatus.SUCCEEDED, SessionStatus.FAILED, SessionStatus.EXPIRED])
@pytest.mark.parametrize("outcome", [Decided(DECISION), Expired(), Erased()])
def test_an_ended_session_never_ends_again(status: SessionStatus, outcome: Any) -> None:
    assert end_session(Session(status=status, expires_at=NOW - timedelta(hours=1)), outcome, NOW) is None


def test_an_erased_session_fails_with_reason_erased_and_keeps_what_it_had() -> None:
    had = SessionResult(is_live=True, confidence=0.4, reasons=[])
    ending = end_session(Session(connections=0, result=had), Erased(), NOW)
    assert ending is not None and ending.status is SessionStatus.FAILED
    assert ending.result == SessionResult(is_live=False, confidence=0.4, reasons=["ERASED"])
    assert ending.event.reasons == ["ERASED"] and ending.audit.outcome == "FAILED"
    assert not ending.counts_toward_lockout  # never opened: the app's session, not an attempt
    started = end_session(Session(connections=1), Erased(), NOW)
    assert started is not None and started.counts_toward_lockout  # deleting an attempt does not dodge it


def test_an_expiry_counts_toward_the_lockout_only_when_the_subject_connected() -> None:
    overdue = Session(expires_at=NOW - timedelta(seconds=1))
    never_opened = end_session(replace(overdue, connections=0), Expired(), NOW)
    opened = end_session(replace(overdue, connections=2), Expired(), NOW)
    assert never_opened is not None and not never_opened.counts_toward_lockout
    assert opened is not None and opened.counts_toward_lockout


@pytest.mark.parametrize(
    ("status", "connections", "counts"),
    [
        (SessionStatus.SUCCEEDED, 1, False),
        (SessionStatus.FAILED, 0, True),
        (SessionStatus.FAILED, 1, True),
        (SessionStatus.EXPIRED, 0, False),
        (SessionStatus.EXPIRED, 1, True),
    ],
)
def test_the_lockout_rule(status: SessionStatus, connections: int, counts: bool) -> None:
    assert counts_toward_lockout(status, connections=connections) is counts
