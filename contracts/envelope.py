"""The envelope every message on the broker carries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field


def new_id() -> str:
    return uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every command and event.

    ``correlation_id`` ties a message to the request, session or call flow it belongs to;
    ``client_id`` names the API client on whose behalf it travels (quotas, audit).
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    #: Bumped on an incompatible change of a message's payload (see docs/messages.md).
    SCHEMA_VERSION: ClassVar[int] = 1

    message_id: str = Field(default_factory=new_id)
    schema_version: int = 1
    correlation_id: str
    client_id: str | None = None
    occurred_at: datetime = Field(default_factory=utc_now)


class Command(Message):
    """Imperative: asks exactly one service to do something."""


class Event(Message):
    """Past tense: tells anyone interested that something happened."""


class Answer(Event):
    """An event that answers one command (the matcher's results).

    Strict: every field is declared (an unknown field is refused), and ``request_id`` names the
    command answered (its ``message_id``). A consumer accepts an answer only for a request it
    issued and stored, so an answer sent anywhere else, or forged, changes nothing.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
