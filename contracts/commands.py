"""Commands: imperative, each handled by exactly one kind of worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import Field, HttpUrl, model_validator

from contracts.envelope import Command
from contracts.values import CallbackOutcome, Fusion, ImageData, QualityFilter

#: The most references one verify or one call flow compares against (FACEPROOF_MAX_REFERENCES sets
#: a lower limit): a request with more is refused before its items are read.
MAX_REFERENCES: Final = 20
#: The longest SDP offer a StartSession carries (FACEPROOF_MAX_SDP_BYTES may only lower it).
MAX_OFFER_SDP: Final = 65_536


class Decision(Command):
    """How a matcher command decides "same person": at most one of the two may be set."""

    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    target_false_match_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    quality_filter: QualityFilter = QualityFilter.NONE

    @model_validator(mode="after")
    def _one_rule(self) -> Decision:
        if self.threshold is not None and self.target_false_match_rate is not None:
            raise ValueError("set threshold or target_false_match_rate, not both")
        return self


class CompareFaces(Decision):
    """Compare the largest face of ``source`` with every face of ``target`` (matcher)."""

    source: ImageData
    target: ImageData
    max_target_faces: int = Field(default=20, ge=1, le=100)


class StartSession(Command):
    """A client offered WebRTC for a liveness session: answer it and stream (call agent).

    Sent by the gateway with ``reply_to``; the call agent replies with :class:`SessionStarted`
    (carrying the SDP answer) and publishes the same event for the liveness worker.
    ``correlation_id`` is the session id. ``connection_id`` names this connection (a reconnect
    gets a new one); frames of a connection are numbered from ``sequence_base``.
    """

    session_id: str
    connection_id: str
    offer_sdp: str = Field(max_length=MAX_OFFER_SDP)
    offer_type: str = "offer"
    language: str = "en"
    expires_at: datetime
    sequence_base: int = Field(default=0, ge=0)


class ExpireSession(Command):
    """Expire a session whose deadline passed, if it is still unfinished (liveness worker)."""

    session_id: str


class JoinCall(Command):
    """Join a controller's WebRTC room and run the video-call flow (call agent).

    ``session_id`` is the liveness session the flow runs (frames, challenges and the decision
    travel exactly as for a hosted-page session); ``correlation_id`` is the flow id.
    """

    flow_id: str
    session_id: str
    ws_url: str = Field(max_length=2048)
    callback_base_url: HttpUrl
    datastore_base_url: HttpUrl | None = None
    token: str = Field(max_length=512)
    language: str = "en"
    expires_at: datetime
    settings: dict[str, Any] = Field(default_factory=dict)


class MatchReferences(Decision):
    """Is the probe (e.g. the best live frame) any of these references? (matcher)

    Whose comparison it is: ``session_id`` (a liveness session's, asked by the liveness worker)
    or ``flow_id`` (a call flow's, asked by the notifier); the answer carries the same.
    ``correlation_id`` only ties the messages together.
    """

    session_id: str | None = None
    flow_id: str | None = None
    probe: ImageData
    references: list[ImageData] = Field(min_length=1, max_length=MAX_REFERENCES)
    fusion: Fusion = Fusion.MAX


class FetchReferences(Command):
    """Fetch a live flow's reference images from its controller and send them to the matcher
    (notifier; its own command, so that one client's slow controller can be put off)."""

    flow_id: str


class DeliverCallback(Command):
    """Tell a controller how its video-call flow ended (notifier)."""

    flow_id: str
    url: HttpUrl
    outcome: CallbackOutcome
    body: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1
