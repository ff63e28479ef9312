"""The stored documents (contracts/documents.py): written in one spelling with a version, legacy
rows (the camelCase dicts written before) still read, a misspelt key refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contracts.documents import (
    CallDecidedDetails,
    ErasureDetails,
    FlowDecision,
    FlowSettingsDocument,
    FrameAnalysisDocument,
    FrameEmbedding,
    LivenessDecisionDocument,
    LivenessStateDocument,
    SessionDecidedDetails,
    SessionResult,
    SessionSettingsDocument,
    StoredDocument,
)
from contracts.http import SessionSettings
from contracts.values import ChallengeType

# Rows exactly as the code before contracts/documents.py wrote them.
LEGACY_RESULT = {
    "isLive": True,
    "confidence": 97.5,
    "reasons": [],
    "referenceImageKey": "sessions/s1/reference.jpg",
    "auditImageKeys": ["sessions/s1/audit-0.jpg"],
    "comparisonResult": 0.91,
    "comparisonMatch": True,
    "challenges": [{"type": "BLINK", "status": "PASSED", "reason": None}],
}
LEGACY_ERASED_RESULT = {"isLive": False, "reasons": ["ERASED"]}
LEGACY_DECISION = {
    "isLive": False,
    "confidence": 12.0,
    "reasons": ["SPOOF_SUSPECTED"],
    "referenceKey": "sessions/s1/reference.jpg",
    "auditKeys": [],
    "challenges": [{"type": "TURN_LEFT", "status": "FAILED", "reason": "TIMEOUT"}],
}
# /v1 sessions stored their settings in snake_case, call flows' sessions in camelCase.
LEGACY_SESSION_SETTINGS = SessionSettings(subject_key="alice", audit_images=1).model_dump(mode="json")
LEGACY_CALL_SESSION_SETTINGS = {
    "challenges": 2,
    "challengeTypes": ["BLINK", "TURN_LEFT"],
    "auditImages": 2,
    "language": "es",
    "expiresInS": 300,
    "readyTimeoutS": None,
}
LEGACY_FLOW_SETTINGS = {**LEGACY_CALL_SESSION_SETTINGS, "timeoutS": 900}
LEGACY_FLOW_DECISION = {
    "isLive": True,
    "confidence": 0.9,
    "similarity": None,
    "match": None,
    "reasons": [],
    "referencesUsed": 2,
    "referenceErrors": ["reference 1: HTTP 404"],
}
LEGACY_STATE = {
    "items": [{"type": "NOSE_TO_TARGET", "target": [0.2, 0.7]}, {"type": "BLINK", "target": None}],
    "connection": "c1",
    "progress": {"version": 1, "next_sequence": 4},
}


def test_a_legacy_session_result_reads_with_every_value() -> None:
    result = SessionResult.from_row(LEGACY_RESULT)
    assert result.is_live is True and result.confidence == 97.5
    assert result.reference_image_key == "sessions/s1/reference.jpg"
    assert result.audit_image_keys == ["sessions/s1/audit-0.jpg"]
    assert (result.comparison_result, result.comparison_match) == (0.91, True)
    assert result.challenges[0].type is ChallengeType.BLINK and result.challenges[0].status == "PASSED"
    erased = SessionResult.from_row(LEGACY_ERASED_RESULT)
    assert erased.is_live is False and erased.confidence is None and erased.reasons == ["ERASED"]


def test_documents_are_written_in_one_spelling_with_their_version_and_read_back() -> None:
    result = SessionResult.from_row(LEGACY_RESULT)
    row = result.to_row()
    assert row["version"] == 1 and "isLive" not in row and row["is_live"] is True
    assert row["challenges"] == [{"type": "BLINK", "status": "PASSED", "reason": None}]
    assert SessionResult.from_row(row) == result


def test_the_liveness_decision_and_the_result_name_the_images_alike() -> None:
    decision = LivenessDecisionDocument.from_row(LEGACY_DECISION)
    assert decision.reference_image_key == "sessions/s1/reference.jpg" and decision.audit_image_keys == []
    assert decision.challenges[0].reason == "TIMEOUT"
    assert LivenessDecisionDocument.from_row(decision.to_row()) == decision
    scrubbed = decision.scrubbed()
    assert scrubbed.reference_image_key is None and scrubbed.is_live is False


def test_both_legacy_spellings_of_session_settings_read_as_one() -> None:
    v1 = SessionSettingsDocument.from_row(LEGACY_SESSION_SETTINGS)
    assert (v1.subject_key, v1.audit_images, v1.challenges, v1.language) == ("alice", 1, 3, "en")
    call = SessionSettingsDocument.from_row(LEGACY_CALL_SESSION_SETTINGS)
    assert call.challenge_types == [ChallengeType.BLINK, ChallengeType.TURN_LEFT]
    assert (call.challenges, call.audit_images, call.language, call.expires_in_s) == (2, 2, "es", 300)
    flow = FlowSettingsDocument.from_row(LEGACY_FLOW_SETTINGS)
    assert flow.timeout_s == 900 and flow.expires_in_s == 300


def test_a_flow_decision_and_the_other_documents_round_trip() -> None:
    decision = FlowDecision.from_row(LEGACY_FLOW_DECISION)
    assert decision.references_used == 2 and decision.reference_errors == ["reference 1: HTTP 404"]
    assert decision.with_reasons("FLOW_TIMEOUT").with_reasons("FLOW_TIMEOUT", "NO_VIDEO").reasons == [
        "FLOW_TIMEOUT",
        "NO_VIDEO",
    ]
    state = LivenessStateDocument.from_row(LEGACY_STATE)
    assert state.challenges[0].target == (0.2, 0.7) and state.challenges[1].type is ChallengeType.BLINK
    assert state.progress == {"version": 1, "next_sequence": 4} and state.connection == "c1"
    documents: list[StoredDocument] = [
        decision,
        state,
        FrameEmbedding(vector=[0.25, -0.5]),
        SessionDecidedDetails(is_live=True, confidence=90.0, comparison_match=True),
        CallDecidedDetails(session_id="s1", is_live=False, reasons=["NO_VIDEO"]),
        ErasureDetails(owner="acme", objects_deleted=6, frames_deleted=3),
    ]
    for document in documents:
        assert type(document).from_row(document.to_row()) == document


def test_the_audit_display_keeps_the_legacy_spelling() -> None:
    details = ErasureDetails(owner="acme", objects_deleted=6, frames_deleted=3)
    shown = details.model_dump(mode="json", by_alias=True)
    assert shown == {"version": 1, "owner": "acme", "objectsDeleted": 6, "framesDeleted": 3}


@pytest.mark.parametrize(
    ("document", "row"),
    [
        (SessionResult, {**LEGACY_RESULT, "isLiv": True}),  # a typo in a legacy row
        (SessionResult, {"version": 1, "isLive": True}),  # a legacy key in a versioned row
        (SessionResult, {"version": 1, "is_live": True, "comparison_resutl": 0.5}),
        (LivenessDecisionDocument, {**LEGACY_DECISION, "auditKey": []}),
        (SessionSettingsDocument, {**LEGACY_CALL_SESSION_SETTINGS, "subjectKye": "x"}),
        (FlowDecision, {"version": 1, "is_live": True, "refrences_used": 1}),
        (SessionResult, {"version": 2, "is_live": True}),  # a version this code does not know
    ],
)
def test_a_misspelt_key_or_unknown_version_is_refused(
    document: type[StoredDocument], row: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        document.from_row(row)


def test_a_legacy_frame_analysis_keeps_shown_beside_the_analysis() -> None:
    legacy = {"width": 640, "height": 480, "face_count": 1, "measures": None, "shown": 2}
    frame = FrameAnalysisDocument.from_row(legacy)
    assert frame.shown == 2 and frame.analysis == {k: v for k, v in legacy.items() if k != "shown"}
    row = frame.to_row()
    assert row == {"version": 1, "analysis": frame.analysis, "shown": 2, "media_lead_s": None}
    assert FrameAnalysisDocument.from_row(row) == frame
    assert FrameAnalysisDocument(analysis=frame.analysis, shown=2) == frame  # built in code
    assert FrameAnalysisDocument.from_row({"width": 640}).shown is None  # before FrameCaptured.shown
    with pytest.raises(ValidationError):
        FrameAnalysisDocument.from_row({"version": 1, "analysis": {}, "shwon": 1})
