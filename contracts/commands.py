"""Commands: imperative, each handled by exactly one kind of worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, HttpUrl

from contracts.envelope import Command
from contracts.values import CallbackOutcome, ChallengeType, Fusion, ImageData


class CompareFaces(Command):
    """Compare the largest face of ``source`` with every face of ``target`` (matcher)."""

    source: ImageData
    target: ImageData
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    max_target_faces: int = Field(default=20, ge=1, le=100)


class StartSession(Command):
    """Begin a liveness session (call agent); correlation_id is the session id."""

    session_id: str
    challenges: list[ChallengeType] = Field(min_length=1, max_length=4)
    language: str = "en"
    expires_at: datetime
    reference: ImageData | None = None


class JoinCall(Command):
    """Join a controller's WebRTC room and run the video-call flow (call agent)."""

    flow_id: str
    ws_url: str
    callback_base_url: HttpUrl
    datastore_base_url: HttpUrl | None = None
    token: str
    language: str = "en"
    settings: dict[str, Any] = Field(default_factory=dict)


class MatchReferences(Command):
    """Compare a probe (the best live frame) with one or more references (matcher)."""

    probe: ImageData
    references: list[ImageData] = Field(min_length=1, max_length=20)
    fusion: Fusion = Fusion.MAX
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class DeliverCallback(Command):
    """Tell a controller how its video-call flow ended (notifier)."""

    flow_id: str
    url: HttpUrl
    outcome: CallbackOutcome
    body: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1
