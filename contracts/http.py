"""HTTP request and response bodies of the gateway (JSON in camelCase)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator
from pydantic.alias_generators import to_camel

from contracts.commands import MAX_REFERENCES
from contracts.values import (
    CallbackOutcome,
    ChallengeType,
    Fusion,
    QualityFilter,
    SessionStatus,
    ThresholdSource,
)


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class DecisionRequest(Body):
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Similarity at or above which a face matches."
    )
    target_false_match_rate: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Use the pack's measured threshold for this false-match rate (default 1e-3).",
    )
    quality_filter: QualityFilter = Field(
        default=QualityFilter.NONE,
        description="Faces below this quality bar are reported but not matched (docs/quality.md).",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> DecisionRequest:
        if self.threshold is not None and self.target_false_match_rate is not None:
            raise ValueError("set threshold or targetFalseMatchRate, not both")
        return self


class CompareRequest(DecisionRequest):
    source: str = Field(description="The image whose largest face is compared: base64 or a data URL.")
    target: str = Field(description="The image whose every face is scored: base64 or a data URL.")


class VerifyRequest(DecisionRequest):
    probe: str = Field(description="The image of the person to verify (largest face): base64 or data URL.")
    references: list[str] = Field(
        min_length=1, max_length=MAX_REFERENCES, description="Reference images (largest face of each)."
    )
    fusion: Fusion = Field(default=Fusion.MAX, description="MAX: any reference; MEAN: all together.")


class QualityOut(Body):
    size_px: float = Field(description="Shorter side of the face box, pixels")
    sharpness: float
    brightness: float = Field(description="Mean grey level 0..255 of the face")
    yaw: float = Field(description="Head pose, degrees (approximate)")
    pitch: float
    roll: float


class FaceOut(Body):
    box: tuple[float, float, float, float] = Field(description="[x1, y1, x2, y2] in pixels")
    score: float = Field(description="Detection confidence 0..1")
    quality: QualityOut | None = None
    quality_issues: list[str] = Field(
        default_factory=list, description="Why the face is below the requested quality bar (empty: it passes)"
    )


class TargetFaceOut(FaceOut):
    similarity: float | None = Field(description="None when the face is below the quality bar")
    match: bool


class ModelOut(Body):
    pack: str
    licence: str
    commercial_use: bool


class DecisionOut(Body):
    similarity: float = Field(description="Calibrated similarity 0..1")
    match: bool
    threshold: float = Field(description="The similarity threshold the decision used")
    threshold_source: ThresholdSource
    target_false_match_rate: float | None = Field(description="The rate the threshold stands for, if any")
    model: ModelOut


class CompareResponse(DecisionOut):
    source_face: FaceOut
    target_faces: list[TargetFaceOut]


class ErrorOut(Body):
    code: str
    detail: str


class ReferenceOut(Body):
    index: int
    similarity: float | None
    match: bool | None
    face: FaceOut | None
    error: ErrorOut | None


class VerifyResponse(DecisionOut):
    fusion: Fusion
    probe_face: FaceOut
    references: list[ReferenceOut]


class LegacyCompareResponse(BaseModel):
    comparisonResult: float


class SessionSettings(Body):
    challenges: int = Field(default=3, ge=2, le=4, description="Number of challenges")
    challenge_types: list[ChallengeType] | None = Field(
        default=None,
        max_length=len(ChallengeType),
        description="Challenge types to draw from (all by default); at least 2 and at least "
        "`challenges` distinct types.",
    )
    audit_images: int = Field(default=2, ge=0, le=4)
    language: str = Field(default="en", min_length=1, max_length=16)
    ready_timeout_s: float | None = Field(
        default=None,
        ge=5,
        le=600,
        description="Seconds the subject has, from their first frame, to pass the pre-checks (one face, "
        "in the frame, not too far or too close, lit, looking at the camera) before the first challenge; "
        "then the session fails with NOT_READY and what was wrong (default 30).",
    )
    expires_in_s: int | None = Field(default=None, ge=30, le=3600)
    subject_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Your opaque key of the person (e.g. a hash of your user id): repeated failed "
        "sessions of one subject lock it out for a while (docs/security.md).",
    )
    device_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Your id of the device the session runs on: locked out like subjectKey.",
    )

    @model_validator(mode="after")
    def _enough_types(self) -> SessionSettings:
        if self.challenge_types is not None:
            distinct = len(set(self.challenge_types))
            if distinct < max(2, self.challenges):
                raise ValueError(
                    f"challengeTypes must hold at least {max(2, self.challenges)} distinct types "
                    f"(2 and at least `challenges`), got {distinct}"
                )
        return self


class CreateSessionRequest(Body):
    client_request_token: str | None = Field(default=None, min_length=1, max_length=128)
    settings: SessionSettings = Field(default_factory=SessionSettings)
    reference: str | None = Field(
        default=None,
        min_length=1,
        description="Optional reference photo to compare the live face with: base64, a data URL, "
        "or an http(s) URL the service fetches (public addresses only).",
    )


class CreateSessionResponse(Body):
    session_id: str
    status: SessionStatus
    expires_at: datetime
    client_token: str | None = Field(
        default=None, description="Secret for the browser (offer and status routes only)."
    )
    client_url: str | None = Field(default=None, description="The hosted page, the token in its fragment.")


class ImageUrl(Body):
    url: str = Field(description="Presigned URL, valid for a short time")


class ChallengeOut(Body):
    type: str
    status: str
    reason: str | None = None


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
    comparison_match: bool | None = None
    reference_image: ImageUrl | None = None
    audit_images: list[ImageUrl] = Field(default_factory=list)
    challenges: list[ChallengeOut] = Field(default_factory=list)
    #: The frames, images and embeddings were erased (retention or DELETE); the decision stays.
    purged: bool = False


class CameraRange(Body):
    """A capability's range as ``getCapabilities()`` reports it."""

    min: float = Field(ge=0, le=100_000)
    max: float = Field(ge=0, le=100_000)


class CameraCapabilities(Body):
    """``MediaStreamTrack.getCapabilities()`` of the camera track (not every browser has it)."""

    width: CameraRange | None = None
    height: CameraRange | None = None
    frame_rate: CameraRange | None = None


class CameraReport(Body):
    """The camera the page streams (its video track): what the browser says it is. Bounded: an
    unknown field or an oversized value is refused (422). ``device_id_hash``: SHA-256 (hex) of
    the track's ``deviceId``, never the id itself. docs/liveness.md, "Injected and replayed streams"."""

    label: str = Field(default="", max_length=256)
    width: int | None = Field(default=None, ge=0, le=16_384)
    height: int | None = Field(default=None, ge=0, le=16_384)
    frame_rate: float | None = Field(default=None, ge=0, le=1_000)
    device_id_hash: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    capabilities: CameraCapabilities | None = None


class OfferRequest(Body):
    sdp: str = Field(min_length=1)
    type: str = Field(pattern="^offer$")
    camera: CameraReport | None = Field(
        default=None, description="The camera the page streams (the hosted page sends it)."
    )


class OfferResponse(Body):
    sdp: str
    type: str = "answer"


class ClientStatusResponse(Body):
    status: SessionStatus


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


# --------------------------------------------------------------------------- video-call flows


#: The longest base URL a flow keeps (its table's columns), counted once normalised.
MAX_BASE_URL_LENGTH: Final = 2048
#: The longest callback URL (base, ``/failure/``, the escaped token): what URL types and most HTTP
#: servers accept (pydantic's ``HttpUrl``, which the DeliverCallback command carries, stops there).
MAX_CALLBACK_URL_LENGTH: Final = 2083


def callback_url(base_url: str, outcome: CallbackOutcome, token: str) -> str:
    """``{base}/success/{token}`` or ``{base}/failure/{token}`` (the token path-escaped)."""
    return f"{base_url.rstrip('/')}/{outcome.value.lower()}/{quote(token, safe='')}"


class JoinCallRequest(Body):
    """The seed's POST /join-call body (snake_case, as the 2060 Vision Service sends it)."""

    ws_url: str = Field(
        min_length=1, max_length=2048, description="The room's protoo WebSocket URL (ws:// or wss://)."
    )
    callback_base_url: HttpUrl = Field(description="The controller: GET list/, PUT success/ and failure/.")
    datastore_base_url: HttpUrl | None = Field(
        default=None,
        description="Where reference ids from the list are fetched: {datastore_base_url}/r/{id}.",
    )
    token: str = Field(min_length=1, max_length=512, description="The controller's token for its callbacks.")
    lang: str = Field(default="en", min_length=1, max_length=16, description="Instruction language.")

    @field_validator("ws_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in {"ws", "wss"} or not parts.hostname:
            raise ValueError("ws_url must be a ws:// or wss:// URL with a host")
        return value

    @model_validator(mode="after")
    def _urls_fit(self) -> JoinCallRequest:
        """Every URL the flow keeps or calls fits, so the flow can be stored and called back."""
        for name, url in (
            ("callback_base_url", self.callback_base_url),
            ("datastore_base_url", self.datastore_base_url),
        ):
            if url is not None and len(str(url)) > MAX_BASE_URL_LENGTH:
                raise ValueError(f"{name} is over {MAX_BASE_URL_LENGTH} characters once normalised")
        longest = callback_url(str(self.callback_base_url), CallbackOutcome.FAILURE, self.token)
        if len(longest) > MAX_CALLBACK_URL_LENGTH:
            raise ValueError(
                f"the callback URL (callback_base_url, /failure/ and the path-escaped token) is over "
                f"{MAX_CALLBACK_URL_LENGTH} characters"
            )
        return self


class CallSettings(Body):
    challenges: int = Field(default=3, ge=2, le=4, description="Number of challenges")
    challenge_types: list[ChallengeType] | None = Field(
        default=None, max_length=len(ChallengeType), description="Types to draw from."
    )
    ready_timeout_s: float | None = Field(
        default=None,
        ge=5,
        le=600,
        description="Seconds the subject has, from their first frame, to pass the pre-checks (one face, "
        "in the frame, not too far or too close, lit, looking at the camera) before the first challenge; "
        "then the session fails with NOT_READY and what was wrong (default 30).",
    )
    session_timeout_s: int | None = Field(
        default=None,
        ge=30,
        le=3600,
        description="Liveness session deadline (default FACEPROOF_SESSION_TTL_S).",
    )
    timeout_s: int | None = Field(
        default=None,
        ge=30,
        le=7200,
        description="The whole flow's deadline, then a failure callback (default FACEPROOF_FLOW_TIMEOUT_S).",
    )
    callback_secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="Sign this flow's callbacks (and send the result in them); never returned.",
    )

    @model_validator(mode="after")
    def _enough_types(self) -> CallSettings:
        if self.challenge_types is not None and len(set(self.challenge_types)) < max(2, self.challenges):
            raise ValueError(f"challengeTypes must hold at least {max(2, self.challenges)} distinct types")
        return self


class CreateCallRequest(JoinCallRequest):
    """POST /v1/calls: the seed's fields (camelCase or snake_case) and optional settings."""

    settings: CallSettings = Field(default_factory=CallSettings)


class CallCreatedResponse(Body):
    flow_id: str
    session_id: str
    status: str
    language: str = Field(description="The instruction language used.")
    requested_language: str
    language_fallback: bool = Field(
        description="True when the requested language has no catalog (English used)."
    )
    deadline: datetime


class CallbackOut(Body):
    outcome: str | None = Field(description="SUCCESS or FAILURE once decided")
    delivery: str | None = Field(description="PENDING, DELIVERED or FAILED")
    attempts: int
    last_error: str | None = None
    status_code: int | None = None


class CallResponse(Body):
    flow_id: str
    session_id: str
    status: str = Field(description="RUNNING, MATCHING, SUCCEEDED or FAILED")
    language: str
    created_at: datetime
    deadline: datetime
    finished_at: datetime | None = None
    is_live: bool | None = None
    confidence: float | None = None
    similarity: float | None = None
    match: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    callback: CallbackOut
