"""Reading a public command's envelope from AMQP properties (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from contracts.public import PUBLIC_COMMAND_BODIES, SCHEMA_VERSION_HEADER, RejectReason
from contracts.routing import PUBLIC_API_VERSION
from infra.amqp_strings import UNDECODABLE, UNDECODABLE_HEADERS
from services.intake.json_scan import has_nul

__all__ = ["Envelope", "Rejected", "allowed_reply_to", "parse_body", "read_envelope"]

MAX_MESSAGE_ID = 128
#: RabbitMQ's direct reply-to pseudo-queue; the broker delivers it to the consumer as
#: ``amq.rabbitmq.reply-to.<token>``, which reaches only the publishing channel.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
MAX_REPLY_TO = 255


class Rejected(Exception):
    """The command is refused for good: dead-lettered, with a CommandRejected event."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        #: The API client, once the publisher is identified (its public events get the rejection).
        self.client_id: str | None = None


@dataclass(frozen=True)
class Envelope:
    command: str
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    user_id: str | None


def allowed_reply_to(reply_to: str | None, user_id: str | None) -> str | None:
    """``reply_to`` when it lies in the publisher's own namespace, else None.

    Allowed: the direct reply-to pseudo-queue, or a queue named ``upstream.<user>.…`` (the only
    queues an upstream user's RabbitMQ permissions let it declare and read). Answers are published
    with faceproof's own connection, so RabbitMQ's permissions never apply to them: without this
    rule a publisher could name an internal queue and write into another client's session.
    """
    if not reply_to or len(reply_to) > MAX_REPLY_TO:
        return None
    if reply_to == DIRECT_REPLY_TO or reply_to.startswith(DIRECT_REPLY_TO + "."):
        return reply_to
    if user_id and "." not in user_id and reply_to.startswith(f"upstream.{user_id}."):
        return reply_to
    return None


def read_envelope(
    *,
    routing_key: str,
    message_id: str | None,
    correlation_id: str | None,
    reply_to: str | None,
    user_id: str | None,
    headers: Mapping[str, object],
    body_size: int,
    max_body_bytes: int,
) -> Envelope:
    """The envelope, or :class:`Rejected` (identity is checked by the caller, against the database)."""
    envelope = Envelope(
        command=routing_key,
        message_id=message_id or None,
        correlation_id=correlation_id or message_id or None,
        reply_to=reply_to or None,
        user_id=user_id or None,
    )
    if envelope.message_id is None or len(envelope.message_id) > MAX_MESSAGE_ID:
        raise Rejected(RejectReason.MISSING_MESSAGE_ID, f"set message_id (1 to {MAX_MESSAGE_ID} characters)")
    if "\x00" in envelope.message_id or "\x00" in (envelope.correlation_id or ""):
        raise Rejected(
            RejectReason.INVALID_CHARACTER, "NUL characters are not allowed in message_id or correlation_id"
        )
    ids = (envelope.message_id, envelope.correlation_id or "", envelope.reply_to or "")
    if any(UNDECODABLE in value for value in ids) or UNDECODABLE_HEADERS in headers:
        raise Rejected(
            RejectReason.INVALID_CHARACTER,
            "message_id, correlation_id, reply_to and header names must be UTF-8 (U+FFFD is refused too)",
        )
    if envelope.reply_to is not None and allowed_reply_to(envelope.reply_to, envelope.user_id) is None:
        raise Rejected(
            RejectReason.INVALID_REPLY_TO,
            f"reply_to must be {DIRECT_REPLY_TO} or one of your own queues, upstream.<your user>.<name>",
        )
    version = headers.get(SCHEMA_VERSION_HEADER, PUBLIC_API_VERSION)
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    if str(version) != str(PUBLIC_API_VERSION):
        raise Rejected(
            RejectReason.UNSUPPORTED_SCHEMA_VERSION,
            f"{SCHEMA_VERSION_HEADER} {version!s:.20} is not supported here (v{PUBLIC_API_VERSION})",
        )
    if routing_key not in PUBLIC_COMMAND_BODIES:
        raise Rejected(
            RejectReason.UNKNOWN_COMMAND,
            f"no public command '{routing_key:.64}'; use one of {', '.join(sorted(PUBLIC_COMMAND_BODIES))}",
        )
    if body_size > max_body_bytes:
        raise Rejected(RejectReason.BODY_TOO_LARGE, f"the message body is over {max_body_bytes} bytes")
    return envelope


def parse_body(command: str, body: bytes) -> BaseModel:
    """The command's body as its HTTP request model; never echoes the input (images, tokens)."""
    model = PUBLIC_COMMAND_BODIES[command]
    if has_nul(body):  # no text column or JSONB value stores one (the gateway refuses it too)
        raise Rejected(RejectReason.INVALID_CHARACTER, "NUL characters are not allowed in JSON strings")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as error:
        problems = error.errors(include_input=False, include_url=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise Rejected(RejectReason.MALFORMED_JSON, "the body is not valid JSON") from None
        where = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in problems[:5]
        )
        raise Rejected(
            RejectReason.INVALID_REQUEST, f"the body does not match the schema ({where})"
        ) from None
