"""Value objects shared by several messages."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Value(BaseModel):
    model_config = ConfigDict(frozen=True)


class ImageData(Value):
    """An image, carried inline (base64 in JSON) or as a key in object storage."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    inline: bytes | None = None
    storage_key: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageData:
        if (self.inline is None) == (self.storage_key is None):
            raise ValueError("exactly one of inline or storage_key must be set")
        return self


class ErrorCode(StrEnum):
    INVALID_IMAGE = "INVALID_IMAGE"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    NO_FACE_IN_SOURCE = "NO_FACE_IN_SOURCE"
    NO_FACE_IN_TARGET = "NO_FACE_IN_TARGET"
    NO_FACE_IN_REFERENCES = "NO_FACE_IN_REFERENCES"
    SOURCE_FACE_BELOW_QUALITY = "SOURCE_FACE_BELOW_QUALITY"
    TARGET_FACES_BELOW_QUALITY = "TARGET_FACES_BELOW_QUALITY"
    UNSUPPORTED_FALSE_MATCH_RATE = "UNSUPPORTED_FALSE_MATCH_RATE"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    INVALID_OFFER = "INVALID_OFFER"
    SESSION_CLOSED = "SESSION_CLOSED"
    CALL_AGENT_BUSY = "CALL_AGENT_BUSY"
    INTERNAL = "INTERNAL"


class ErrorInfo(Value):
    """A permanent failure a worker reports instead of a result."""

    code: ErrorCode
    detail: str


class QualityFilter(StrEnum):
    """Rekognition's semantics: faces below the bar are reported, not matched (docs/quality.md)."""

    NONE = "NONE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class FaceQualityInfo(Value):
    """Quality measures of a face (docs/quality.md): pixels, sharpness, grey level, pose in degrees."""

    size_px: float
    sharpness: float
    brightness: float
    yaw: float
    pitch: float
    roll: float


class FaceBox(Value):
    """A detected face: box [x1, y1, x2, y2] in source pixels, detection score, quality.

    ``quality_issues`` lists why the face is below the requested quality bar (empty: it passes).
    """

    box: tuple[float, float, float, float]
    score: float = Field(ge=0.0, le=1.0)
    quality: FaceQualityInfo | None = None
    quality_issues: tuple[str, ...] = ()


class ScoredFace(FaceBox):
    """A target face; faces below the quality bar have no similarity and never match."""

    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    match: bool


class ThresholdSource(StrEnum):
    """Where a decision threshold came from."""

    REQUEST = "REQUEST"  # the caller's `threshold`
    TARGET_FALSE_MATCH_RATE = "TARGET_FALSE_MATCH_RATE"  # the pack's threshold for the caller's rate
    DEFAULT = "DEFAULT"  # the pack's threshold for its default rate


class Threshold(Value):
    value: float = Field(ge=0.0, le=1.0)
    source: ThresholdSource
    false_match_rate: float | None = None


class ReferenceScore(Value):
    """One reference of a many-reference compare: its best face and score, or why it has none."""

    index: int = Field(ge=0)
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    face: FaceBox | None = None
    error: ErrorInfo | None = None


class ModelInfo(Value):
    """Which model pack produced a result, and under which licence."""

    pack: str
    licence: str
    commercial_use: bool


class SessionStatus(StrEnum):
    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return self in {SessionStatus.SUCCEEDED, SessionStatus.FAILED, SessionStatus.EXPIRED}


class ChallengeType(StrEnum):
    TURN_LEFT = "TURN_LEFT"
    TURN_RIGHT = "TURN_RIGHT"
    LOOK_UP = "LOOK_UP"
    LOOK_DOWN = "LOOK_DOWN"
    BLINK = "BLINK"
    OPEN_MOUTH = "OPEN_MOUTH"
    NOSE_TO_TARGET = "NOSE_TO_TARGET"
    MOVE_CLOSER = "MOVE_CLOSER"


class Precheck(StrEnum):
    """What keeps a subject from starting the first challenge (the liveness worker's pre-checks,
    services/liveness/readiness.py), most important first. The first four are the challenges' own
    frame gates; a session whose subject never got ready fails with ``NOT_READY`` and these."""

    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    FACE_OUT_OF_FRAME = "FACE_OUT_OF_FRAME"
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    FACE_TOO_CLOSE = "FACE_TOO_CLOSE"
    TOO_DARK = "TOO_DARK"
    BACKLIT = "BACKLIT"
    NOT_LOOKING_AT_CAMERA = "NOT_LOOKING_AT_CAMERA"


class Fusion(StrEnum):
    """How several reference scores become one."""

    MAX = "MAX"
    MEAN = "MEAN"


class CallbackOutcome(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
