"""The JSON documents stored in the database: typed, versioned, one spelling (snake_case).

Every JSON column faceproof writes holds one of these models, and the repositories write and
read the columns only through them (``to_row`` and ``from_row``); services see the models,
never the columns' dicts.

Each column, its document, who writes it and who reads it:

* ``sessions.settings``: :class:`SessionSettingsDocument`; written by intake (session and call
  creation); read by the liveness worker, the lockout and the gateway (the offer's language).
* ``sessions.result``: :class:`SessionResult`; written by ``domain.sessions.end_session``'s
  ending (``SessionRepository.end``) and retention (scrubbed); read by the gateway (/v1 and seed
  reads) and the notifier.
* ``liveness_states.challenges``: :class:`LivenessStateDocument`; ``infra.db.liveness`` only (the
  replay progress inside is ``services.liveness.progress.ReplayProgress``, versioned on its own).
* ``liveness_states.decision``: :class:`LivenessDecisionDocument`; written by the liveness worker
  and retention (scrubbed); read by the liveness worker (``domain.sessions.decided_result``).
* ``liveness_frames.analysis``: :class:`FrameAnalysisDocument`; written by the liveness worker
  (each analysed frame), read by its replay step (the analysis inside is
  ``services.liveness.analysis.FrameAnalysis.to_dict``'s, read by its ``from_dict``).
* ``liveness_frames.embedding``: :class:`FrameEmbedding`; ``infra.db.liveness`` only.
* ``call_flows.settings``: :class:`FlowSettingsDocument`; written by intake (call creation).
* ``call_flows.decision``: :class:`FlowDecision`; written by the notifier; read by the notifier
  (callback body, audit) and the gateway (GET /v1/calls).
* ``audit_events.details``: :class:`SessionDecidedDetails` (``SessionRepository.end``),
  :class:`CallDecidedDetails` (notifier), :class:`ErasureDetails` (retention); read by
  ``infra.db.audit`` (``faceproof ops audit``).

Versions. A document written from version 1 on carries ``"version": 1`` and only its own field
names (an unknown or misspelt key is refused). Rows written before (no ``version`` key) are the
legacy camelCase dicts: reading one renames its legacy keys (each field's camelCase name and
the class's ``LEGACY_KEYS``) before the same strict validation, so old rows stay readable and a
typo is still caught. Displays that showed the legacy spelling (the audit listing) render with
``model_dump(by_alias=True)``.

Not here: ``outbox.payload`` / ``outbox.headers`` (a message's own JSON: a ``contracts``
message model dumped as sent, read back by that model when a consumer receives it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from contracts.values import ChallengeType

__all__ = [
    "DOCUMENT_VERSION",
    "CallDecidedDetails",
    "ChallengeResult",
    "ErasureDetails",
    "FlowDecision",
    "FlowSettingsDocument",
    "FrameAnalysisDocument",
    "FrameEmbedding",
    "LivenessDecisionDocument",
    "LivenessStateDocument",
    "SessionDecidedDetails",
    "SessionResult",
    "SessionSettingsDocument",
    "StoredChallenge",
    "StoredDocument",
]

#: The version every document is written with.
DOCUMENT_VERSION: Final = 1

_CONFIG = ConfigDict(
    extra="forbid", frozen=True, alias_generator=AliasGenerator(serialization_alias=to_camel)
)


class _Part(BaseModel):
    """A part of a document (no version of its own)."""

    model_config = _CONFIG


class StoredDocument(BaseModel):
    """Base of the stored documents: ``to_row`` writes, ``from_row`` reads (legacy rows too)."""

    model_config = _CONFIG

    #: Legacy (version-less) keys that are not simply a field's camelCase name: old -> field.
    LEGACY_KEYS: ClassVar[Mapping[str, str]] = {}

    version: Literal[1] = DOCUMENT_VERSION

    @model_validator(mode="before")
    @classmethod
    def _legacy_row(cls, data: Any) -> Any:
        """A row without ``version`` is a legacy camelCase dict: rename its keys, then validate."""
        if not isinstance(data, Mapping) or "version" in data:
            return data
        renames = {to_camel(name): name for name in cls.model_fields} | dict(cls.LEGACY_KEYS)
        return {renames.get(key, key): value for key, value in data.items()}

    def to_row(self) -> dict[str, Any]:
        """The column's JSON value."""
        return self.model_dump(mode="json")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        """Read a column's JSON value (``ValidationError`` for one that is not this document)."""
        return cls.model_validate(dict(row))


# -- sessions ---------------------------------------------------------------------------------


class SessionSettingsDocument(StoredDocument):
    """A session's settings (``sessions.settings``), as asked for at creation (POST /v1/sessions,
    ``session.start``, or a call's settings). The API validated them; the readers apply defaults
    and bounds. Legacy rows: snake_case (/v1 sessions) or camelCase (call flows') keys."""

    challenges: int | None = None
    challenge_types: list[ChallengeType] | None = None
    audit_images: int | None = None
    language: str = "en"
    ready_timeout_s: float | None = None
    expires_in_s: int | None = None
    #: The app's key of the person and its device id (lockout); never logged.
    subject_key: str | None = None
    device_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _language_default(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("language", "") is None:
            return {**data, "language": "en"}
        return data


class FlowSettingsDocument(SessionSettingsDocument):
    """A call flow's settings (``call_flows.settings``): its session's, and the flow's deadline."""

    timeout_s: int | None = None


class ChallengeResult(_Part):
    """One challenge as a session result reports it: PASSED, FAILED or PENDING (never reached)."""

    type: ChallengeType
    status: str
    reason: str | None = None


class LivenessDecisionDocument(StoredDocument):
    """The liveness worker's decision (``liveness_states.decision``): live or not, the frames it
    kept, each challenge's outcome. Legacy rows name the images ``referenceKey``/``auditKeys``."""

    LEGACY_KEYS: ClassVar[Mapping[str, str]] = {
        "referenceKey": "reference_image_key",
        "auditKeys": "audit_image_keys",
    }

    is_live: bool
    confidence: float
    reasons: list[str] = Field(default_factory=list)
    reference_image_key: str | None = None
    audit_image_keys: list[str] = Field(default_factory=list)
    challenges: list[ChallengeResult] = Field(default_factory=list)

    def scrubbed(self) -> Self:
        """Without image keys (erasure, retention)."""
        return self.model_copy(update={"reference_image_key": None, "audit_image_keys": []})


class SessionResult(StoredDocument):
    """A finished session's result (``sessions.result``): the decision, the comparison with the
    app's reference image, the kept images' object keys and the challenges. An erased session
    that had none keeps only ``is_live`` False and its reason."""

    is_live: bool
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)
    reference_image_key: str | None = None
    audit_image_keys: list[str] = Field(default_factory=list)
    comparison_result: float | None = None
    comparison_match: bool | None = None
    challenges: list[ChallengeResult] = Field(default_factory=list)

    def scrubbed(self) -> Self:
        """Without image keys (the decision, scores and reasons stay)."""
        return self.model_copy(update={"reference_image_key": None, "audit_image_keys": []})


class StoredChallenge(_Part):
    """A drawn challenge: its type and, for NOSE_TO_TARGET, the target (mirrored view, 0..1)."""

    type: ChallengeType
    target: tuple[float, float] | None = None


class LivenessStateDocument(StoredDocument):
    """The ``liveness_states.challenges`` column: the drawn challenges, the connection streaming
    now and the replay's progress (``services.liveness.progress.ReplayProgress``'s document, which
    has its own version; opaque here). Legacy rows name the challenges ``items``."""

    LEGACY_KEYS: ClassVar[Mapping[str, str]] = {"items": "challenges"}

    challenges: list[StoredChallenge] = Field(default_factory=list)
    connection: str = ""
    progress: dict[str, Any] | None = None


class FrameAnalysisDocument(StoredDocument):
    """An analysed frame (``liveness_frames.analysis``): the analysis (``FrameAnalysis.to_dict``,
    the liveness worker's own record of the face, its measures and quality, opaque here) and what
    the subject could see when the frame was taken (``FrameCaptured.shown``), and how far the
    stream's media clock had run ahead then (``FrameCaptured.media_lead_s``). Legacy rows are
    the analysis itself with ``shown`` mixed into it."""

    analysis: dict[str, Any]
    shown: int | None = None
    media_lead_s: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_frame(cls, data: Any) -> Any:
        # A legacy row is the analysis itself (which has no "analysis" key); built in code, the
        # document is given its fields by name without a version.
        if isinstance(data, Mapping) and "version" not in data and "analysis" not in data:
            rest = {key: value for key, value in data.items() if key != "shown"}
            return {"version": DOCUMENT_VERSION, "analysis": rest, "shown": data.get("shown")}
        return data


class FrameEmbedding(StoredDocument):
    """An analysed frame's face embedding (``liveness_frames.embedding``); biometric: erased
    with the session's data."""

    vector: list[float]


# -- call flows -------------------------------------------------------------------------------


class FlowDecision(StoredDocument):
    """A call flow's decision (``call_flows.decision``): its session's liveness, the comparison
    with the controller's references, and every reason it failed."""

    is_live: bool | None = None
    confidence: float | None = None
    similarity: float | None = None
    match: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    references_used: int | None = None
    reference_errors: list[str] = Field(default_factory=list)

    def with_reasons(self, *reasons: str) -> Self:
        """These reasons added after the ones it has (each once)."""
        merged = list(self.reasons) + [reason for reason in reasons if reason not in self.reasons]
        return self.model_copy(update={"reasons": merged})


# -- audit details ----------------------------------------------------------------------------


class SessionDecidedDetails(StoredDocument):
    """SESSION_DECIDED: how the session ended (no images, keys or embeddings)."""

    is_live: bool | None = None
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)
    comparison_result: float | None = None
    comparison_match: bool | None = None


class CallDecidedDetails(StoredDocument):
    """CALL_DECIDED: how the flow ended and the session it ran."""

    session_id: str
    is_live: bool | None = None
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)
    similarity: float | None = None
    match: bool | None = None


class ErasureDetails(StoredDocument):
    """SESSION_ERASED, SESSION_PURGED: whose session, and how much was deleted."""

    owner: str
    objects_deleted: int
    frames_deleted: int
