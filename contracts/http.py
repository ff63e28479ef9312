"""HTTP request and response bodies of the gateway (JSON in camelCase)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from contracts.values import ChallengeType, SessionStatus


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CompareRequest(Body):
    source: str = Field(description="The image whose largest face is compared: base64 or a data URL.")
    target: str = Field(description="The image whose every face is scored: base64 or a data URL.")
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Similarity at or above which a face matches."
    )


class FaceOut(Body):
    box: tuple[float, float, float, float] = Field(description="[x1, y1, x2, y2] in pixels")
    score: float = Field(description="Detection confidence 0..1")


class TargetFaceOut(FaceOut):
    similarity: float
    match: bool


class ModelOut(Body):
    pack: str
    licence: str
    commercial_use: bool


class CompareResponse(Body):
    similarity: float = Field(description="Calibrated similarity 0..1 of the best target face")
    match: bool
    threshold: float
    source_face: FaceOut
    target_faces: list[TargetFaceOut]
    model: ModelOut


class LegacyCompareResponse(BaseModel):
    comparisonResult: float


class SessionSettings(Body):
    challenges: int = Field(default=3, ge=2, le=4, description="Number of challenges")
    challenge_types: list[ChallengeType] | None = None
    audit_images: int = Field(default=2, ge=0, le=4)
    language: str = "en"
    expires_in_s: int | None = Field(default=None, ge=30, le=3600)


class CreateSessionRequest(Body):
    client_request_token: str | None = Field(default=None, min_length=1, max_length=128)
    settings: SessionSettings = Field(default_factory=SessionSettings)


class CreateSessionResponse(Body):
    session_id: str
    status: SessionStatus
    expires_at: datetime


class SessionResponse(Body):
    session_id: str
    client_request_token: str | None
    status: SessionStatus
    created_at: datetime
    expires_at: datetime
    is_live: bool | None = None
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)
    comparison_result: float | None = None


class LegacyCreateSessionResponse(BaseModel):
    SessionId: str


class LegacySessionResponse(BaseModel):
    clientRequestToken: str | None
    status: str
    comparisonResult: float | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str | None = None
    errors: list[dict[str, Any]] | None = None
