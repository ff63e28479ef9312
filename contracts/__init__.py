"""Messages and HTTP bodies shared by every faceproof service: pure pydantic, no I/O."""

from contracts.commands import CompareFaces, DeliverCallback, JoinCall, MatchReferences, StartSession
from contracts.envelope import Command, Event, Message, new_id
from contracts.events import (
    CallbackDelivered,
    ChallengeIssued,
    ChallengeVerdict,
    FacesCompared,
    FrameCaptured,
    LivenessDecided,
    ReferencesMatched,
    SessionFinished,
    SessionStarted,
)
from contracts.values import (
    CallbackOutcome,
    ChallengeType,
    ErrorCode,
    ErrorInfo,
    FaceBox,
    Fusion,
    ImageData,
    ModelInfo,
    ScoredFace,
    SessionStatus,
)

__all__ = [
    "CallbackDelivered",
    "CallbackOutcome",
    "ChallengeIssued",
    "ChallengeType",
    "ChallengeVerdict",
    "Command",
    "CompareFaces",
    "DeliverCallback",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "FaceBox",
    "FacesCompared",
    "FrameCaptured",
    "Fusion",
    "ImageData",
    "JoinCall",
    "LivenessDecided",
    "MatchReferences",
    "Message",
    "ModelInfo",
    "ReferencesMatched",
    "ScoredFace",
    "SessionFinished",
    "SessionStarted",
    "SessionStatus",
    "StartSession",
    "new_id",
]
