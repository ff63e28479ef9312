"""The public command and event API on the broker (docs/public-api.md).

A public command's body is the JSON body of the matching HTTP request (``CompareRequest`` for
``compare.faces``, ``CreateSessionRequest`` for ``session.start``, ``CreateCallRequest`` for
``call.join``), so both doors validate the same fields the same way. Its envelope travels in
AMQP properties: ``message_id`` (required; duplicates are processed once), ``correlation_id``
(optional, echoed in the answer), ``reply_to`` (optional), ``user_id`` (the publishing RabbitMQ
user; RabbitMQ checks it) and the header ``x-schema-version`` (optional, 1).

Answers are events: the internal ones upstream may see (``FacesCompared``, ``LivenessDecided``,
``SessionFinished``, ``CallFailed``, ``CallbackDelivered``) and the three below.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from contracts.envelope import Event
from contracts.http import CompareRequest, CreateCallRequest, CreateSessionRequest
from contracts.routing import PublicCommandKey
from contracts.values import SessionStatus

__all__ = [
    "PUBLIC_COMMAND_BODIES",
    "SCHEMA_VERSION_HEADER",
    "CallStarted",
    "CommandRejected",
    "RejectReason",
    "SessionCreated",
]

#: The AMQP header carrying a public command's schema version (absent: 1).
SCHEMA_VERSION_HEADER = "x-schema-version"

#: Each public command's routing key and the HTTP request body it carries.
PUBLIC_COMMAND_BODIES: dict[str, type[BaseModel]] = {
    PublicCommandKey.COMPARE_FACES: CompareRequest,
    PublicCommandKey.START_SESSION: CreateSessionRequest,
    PublicCommandKey.JOIN_CALL: CreateCallRequest,
}


class RejectReason(StrEnum):
    """Why the ingress refused a command; besides these, the HTTP problem codes of the same
    check (``INVALID_BASE64``, ``INVALID_IMAGE``, ``IMAGE_TOO_LARGE``, ``IMAGE_TOO_MANY_PIXELS``,
    ``REFERENCE_URL_REFUSED``, ...) are used as they are."""

    UNAUTHENTICATED = "UNAUTHENTICATED"  # no user_id, or a user not mapped to an active API client
    MISSING_MESSAGE_ID = "MISSING_MESSAGE_ID"
    INVALID_REPLY_TO = "INVALID_REPLY_TO"  # reply_to outside the publisher's own namespace
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"  # a routing key that is no public command
    UNSUPPORTED_SCHEMA_VERSION = "UNSUPPORTED_SCHEMA_VERSION"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_REQUEST = "INVALID_REQUEST"  # valid JSON that does not match the command's schema
    INVALID_CHARACTER = "INVALID_CHARACTER"  # a NUL character in the body's strings or the ids
    UNAVAILABLE = "UNAVAILABLE"  # storage or database down while the command was valid


class CommandRejected(Event):
    """A public command was refused and dead-lettered; ``correlation_id`` is the command's."""

    rejected_message_id: str | None = None
    command: str = Field(description="The routing key the command was published with.")
    reason: str = Field(description="A RejectReason or an HTTP problem code of the same check.")
    detail: str = ""


class SessionCreated(Event):
    """Answer to ``session.start``: the same fields as the 201 of POST /v1/sessions."""

    session_id: str
    status: SessionStatus
    expires_at: datetime
    client_token: str | None = None
    client_url: str | None = None


class CallStarted(Event):
    """Answer to ``call.join``: the same fields as the 202 of POST /v1/calls."""

    flow_id: str
    session_id: str
    status: str
    language: str
    requested_language: str
    language_fallback: bool
    deadline: datetime
