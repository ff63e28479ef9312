"""Events: past tense, published for anyone interested."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from contracts.envelope import Answer, Event, utc_now
from contracts.values import (
    CallbackOutcome,
    ChallengeType,
    ErrorInfo,
    FaceBox,
    Fusion,
    ModelInfo,
    ReferenceScore,
    ScoredFace,
    SessionStatus,
    Threshold,
)


class FacesCompared(Answer):
    """Answer to CompareFaces: a result, or ``error`` when the inputs cannot be compared."""

    error: ErrorInfo | None = None
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    match: bool | None = None
    threshold: Threshold | None = None
    source_face: FaceBox | None = None
    target_faces: list[ScoredFace] = Field(default_factory=list)
    model: ModelInfo


class SessionStarted(Event):
    """A call agent accepted a session's WebRTC offer (reply to StartSession, and published).

    ``error`` is set (and ``answer_sdp`` empty) when the offer could not be answered.
    """

    session_id: str
    connection_id: str = ""
    answer_sdp: str = ""
    answer_type: str = "answer"
    error: ErrorInfo | None = None


class FrameCaptured(Event):
    """A sampled camera frame, stored as JPEG under the session (call agent).

    ``sequence`` grows by one per sampled frame within a connection (from the connection's
    ``sequence_base``); ``captured_at`` is the call agent's clock when the frame arrived;
    ``shown``: the highest challenge index whose instruction the agent had sent in its video when
    the frame arrived (-1: none yet; None: not known): the liveness worker starts the first
    challenge's clock at the first frame taken while it was on screen (docs/liveness.md);
    ``media_lead_s``: how far the stream's media clock (its frames' timestamps) had run ahead of the
    agent's clock on this connection when the frame arrived (None: frames without timestamps;
    services/call_agent/media_clock.py): a live camera's stays under a first frame's delay.
    """

    session_id: str
    connection_id: str = ""
    sequence: int = Field(ge=0)
    storage_key: str
    width: int
    height: int
    captured_at: datetime = Field(default_factory=utc_now)
    shown: int | None = Field(default=None, ge=-1)
    media_lead_s: float | None = Field(default=None, allow_inf_nan=False)


class ChallengeIssued(Event):
    """The instruction to show now: challenge ``index`` of ``count`` (liveness worker).

    ``target`` is the NOSE_TO_TARGET point in the mirrored view, normalised 0..1.
    """

    session_id: str
    index: int = Field(ge=0)
    count: int = Field(default=1, ge=1)
    challenge: ChallengeType
    deadline_ms: int
    target: tuple[float, float] | None = None


class ReadinessChecked(Event):
    """What is wrong with the subject's frames (liveness worker, when it changes): ``problems`` are
    :class:`~contracts.values.Precheck` codes, most important first. Before the first challenge:
    what keeps the subject from starting (empty: nothing is wrong, hold still); the call agent
    draws a "get ready" instruction naming them. While the challenges run: what makes the worker
    refuse the frames (the challenges' gates, too dark: none counts, the clock runs on; empty:
    fixed); the call agent draws the first beside the instruction."""

    session_id: str
    problems: list[str] = Field(default_factory=list)


class ChallengeVerdict(Event):
    session_id: str
    index: int = Field(ge=0)
    count: int = Field(default=1, ge=1)
    challenge: ChallengeType
    passed: bool
    reason: str | None = None


class LivenessDecided(Event):
    """The liveness decision; ``reference_key`` is the best frontal frame, ``audit_keys`` samples."""

    session_id: str
    is_live: bool
    confidence: float = Field(ge=0.0, le=100.0)
    reasons: list[str] = Field(default_factory=list)
    reference_key: str | None = None
    audit_keys: list[str] = Field(default_factory=list)


class ReferencesMatched(Answer):
    """Answer to MatchReferences: the fused similarity and every reference's own, or ``error``.
    ``session_id`` / ``flow_id``: the request's, copied (whose comparison it is)."""

    session_id: str | None = None
    flow_id: str | None = None
    error: ErrorInfo | None = None
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    match: bool | None = None
    threshold: Threshold | None = None
    fusion: Fusion = Fusion.MAX
    probe_face: FaceBox | None = None
    references: list[ReferenceScore] = Field(default_factory=list)
    model: ModelInfo


class SessionFinished(Event):
    session_id: str
    status: SessionStatus
    reasons: list[str] = Field(default_factory=list)


class CallJoined(Event):
    """The call agent joined the controller's room and consumes the subject's video."""

    flow_id: str
    session_id: str


class CallFailed(Event):
    """The call agent could not run the call: ``reason`` is a stable code
    (ROOM_UNREACHABLE, ROOM_REFUSED, SIGNALLING_ERROR, SOCKET_DROPPED, NO_VIDEO, SUBJECT_LEFT,
    CALL_AGENT_BUSY)."""

    flow_id: str
    session_id: str
    reason: str
    detail: str = ""


class CallbackDelivered(Event):
    flow_id: str
    outcome: CallbackOutcome
    delivered: bool
    attempts: int
    status_code: int | None = None
