"""Events: past tense, published for anyone interested."""

from __future__ import annotations

from pydantic import Field

from contracts.envelope import Event
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


class FacesCompared(Event):
    """Answer to CompareFaces: a result, or ``error`` when the inputs cannot be compared."""

    error: ErrorInfo | None = None
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    match: bool | None = None
    threshold: Threshold | None = None
    source_face: FaceBox | None = None
    target_faces: list[ScoredFace] = Field(default_factory=list)
    model: ModelInfo | None = None


class SessionStarted(Event):
    session_id: str


class FrameCaptured(Event):
    """A sampled camera frame, stored under the session (call agent)."""

    session_id: str
    sequence: int = Field(ge=0)
    storage_key: str
    width: int
    height: int


class ChallengeIssued(Event):
    session_id: str
    index: int = Field(ge=0)
    challenge: ChallengeType
    deadline_ms: int
    target: tuple[float, float] | None = None


class ChallengeVerdict(Event):
    session_id: str
    index: int = Field(ge=0)
    challenge: ChallengeType
    passed: bool
    reason: str | None = None


class LivenessDecided(Event):
    session_id: str
    is_live: bool
    confidence: float = Field(ge=0.0, le=100.0)
    reasons: list[str] = Field(default_factory=list)
    reference_key: str | None = None
    audit_keys: list[str] = Field(default_factory=list)


class ReferencesMatched(Event):
    """Answer to MatchReferences: the fused similarity and every reference's own, or ``error``."""

    error: ErrorInfo | None = None
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    match: bool | None = None
    threshold: Threshold | None = None
    fusion: Fusion = Fusion.MAX
    probe_face: FaceBox | None = None
    references: list[ReferenceScore] = Field(default_factory=list)
    model: ModelInfo | None = None


class SessionFinished(Event):
    session_id: str
    status: SessionStatus
    reasons: list[str] = Field(default_factory=list)


class CallbackDelivered(Event):
    flow_id: str
    outcome: CallbackOutcome
    delivered: bool
    attempts: int
    status_code: int | None = None
