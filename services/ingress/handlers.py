"""Public commands in: identify the client, run once, validate as HTTP does, forward inside.

Each handler gets the envelope, the raw body and named dependencies (ports), and either returns
normally (the message is acked) or raises :class:`Rejected` (dead-lettered, with a
CommandRejected event). Anything else (database or broker down) propagates: the message is
nacked, redelivered and, past the delivery limit, dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import NAMESPACE_URL, uuid5

from pydantic import BaseModel

from contracts.commands import CompareFaces
from contracts.envelope import Event
from contracts.http import CompareRequest, CreateCallRequest, CreateSessionRequest
from contracts.public import CallStarted, CommandRejected, RejectReason, SessionCreated
from contracts.routing import INGRESS_COMMANDS, PUBLIC_COMMANDS_EXCHANGE, PublicEventKey
from contracts.values import ErrorCode, ImageData
from domain.limits import Limits
from domain.ports import RateBuckets
from infra.broker import MAX_MESSAGE_BYTES
from infra.db.errors import DatabaseError, DatabaseUnavailable
from infra.db.ingress import BrokerClient, CommandStatus
from infra.dead_letters import RedactedLetter
from infra.publisher import MessageTooLarge, check_size
from infra.settings import Settings
from services.ingress.envelope import Envelope, Rejected, allowed_reply_to, parse_body, read_envelope
from services.intake.caller import Caller
from services.intake.calls import CallStarter, call_created
from services.intake.errors import IntakeError
from services.intake.images import read_image_field
from services.intake.sessions import SessionCreator, client_url

__all__ = [
    "CommandDeps",
    "DeadLetter",
    "Delivery",
    "Outbox",
    "Owners",
    "handle_command",
    "receive",
    "reject",
    "relay",
]

log = logging.getLogger("faceproof.ingress")

#: Bodies up to this size are parsed on the event loop (well under a millisecond).
_INLINE_PARSE_BYTES = 64 * 1024


class Identities(Protocol):
    async def client_for(self, user_name: str) -> BrokerClient | None: ...


class Processed(Protocol):
    async def claim(self, client_id: str, message_id: str, command: str, *, redelivered: bool) -> bool: ...

    async def finish(self, client_id: str, message_id: str, status: CommandStatus) -> None: ...


class Outbox(Protocol):
    """Where the ingress publishes: inside (commands), to a reply queue, to the public events."""

    async def compare(self, command: CompareFaces, *, reply_to: str | None, correlation_id: str) -> None: ...

    async def reply(self, event: Event, *, reply_to: str, correlation_id: str) -> None: ...

    async def public(self, event: Event, *, client_id: str, key: str) -> None: ...


class Owners(Protocol):
    """The API client that owns a session or a call flow (None: unknown)."""

    async def of_session(self, session_id: str) -> str | None: ...

    async def of_flow(self, flow_id: str) -> str | None: ...


#: Dead-letters the redacted record of a refused command (returns once the broker confirmed it).
DeadLetter = Callable[[RedactedLetter], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """One public command as the broker delivered it: its AMQP properties, unchecked."""

    routing_key: str
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    user_id: str | None
    exchange: str
    headers: Mapping[str, object]
    redelivered: bool


@dataclass(frozen=True)
class CommandDeps:
    settings: Settings
    identities: Identities
    processed: Processed
    limiter: RateBuckets | None
    sessions: SessionCreator
    calls: CallStarter
    outbox: Outbox


async def receive(delivery: Delivery, body: bytes, *, deps: CommandDeps, dead_letter: DeadLetter) -> None:
    """Check the envelope and run the command; a refused one is answered with CommandRejected and
    its redacted record dead-lettered (then acknowledged: the caller returns normally)."""
    try:
        envelope = read_envelope(
            routing_key=delivery.routing_key,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            user_id=delivery.user_id,
            headers=delivery.headers,
            body_size=len(body),
            max_body_bytes=deps.settings.max_body_bytes,
        )
        await handle_command(envelope, body, redelivered=delivery.redelivered, deps=deps)
    except Rejected as rejection:
        await _refuse(delivery, body, rejection, deps=deps, dead_letter=dead_letter)


async def _refuse(
    delivery: Delivery, body: bytes, rejection: Rejected, *, deps: CommandDeps, dead_letter: DeadLetter
) -> None:
    log.info("public command %s rejected: %s", delivery.routing_key[:64], rejection.reason)
    client_id = rejection.client_id
    if client_id is None and delivery.user_id:  # refused before the client was looked up
        client = await deps.identities.client_for(delivery.user_id)
        client_id = None if client is None else client.client_id
    await reject(
        command=delivery.routing_key,
        message_id=delivery.message_id,
        correlation_id=delivery.correlation_id,
        reply_to=allowed_reply_to(delivery.reply_to, delivery.user_id),  # never an invalid one
        client_id=client_id,
        rejection=rejection,
        outbox=deps.outbox,
    )
    # Not a broker reject: RabbitMQ would dead-letter the body, images and all.
    letter = RedactedLetter.of(
        source_queue=INGRESS_COMMANDS.queue,
        exchange=delivery.exchange or PUBLIC_COMMANDS_EXCHANGE,
        routing_key=delivery.routing_key,
        message_id=delivery.message_id,
        correlation_id=delivery.correlation_id,
        user_id=delivery.user_id,
        client_id=client_id,
        headers=delivery.headers,
        body=body,
        reason=rejection.reason,
        detail=rejection.detail,
        at=datetime.now(UTC),
    )
    await dead_letter(letter)


async def relay(event: Event, owner: str | None, key: str, outbox: Outbox) -> None:
    """An internal event to its owner's public events (dropped when nobody owns its subject)."""
    if owner is not None:
        await outbox.public(event, client_id=owner, key=key)


async def handle_command(
    envelope: Envelope, body: bytes, *, redelivered: bool, deps: CommandDeps
) -> BrokerClient | None:
    """Run one public command (or raise :class:`Rejected`); returns the client it ran for, or
    ``None`` for a duplicate that was dropped."""
    if envelope.user_id is None:
        raise Rejected(RejectReason.UNAUTHENTICATED, "publish with the user_id property set to your user")
    client = await deps.identities.client_for(envelope.user_id)
    if client is None:
        raise Rejected(RejectReason.UNAUTHENTICATED, "this broker user is not mapped to an active API client")
    assert envelope.message_id is not None
    taken = await deps.processed.claim(
        client.client_id, envelope.message_id, envelope.command, redelivered=redelivered
    )
    if not taken:
        log.info("duplicate %s %s dropped", envelope.command, envelope.message_id)
        return None
    try:
        await _charge(client, deps)
        await _run(envelope, await _parsed(envelope.command, body), client, deps)
    except Rejected as rejection:
        await deps.processed.finish(client.client_id, envelope.message_id, CommandStatus.REJECTED)
        rejection.client_id = client.client_id
        raise
    except IntakeError as error:
        if error.retryable:  # storage or broker down: retry (the claim is retaken)
            raise
        await deps.processed.finish(client.client_id, envelope.message_id, CommandStatus.REJECTED)
        refused = Rejected(error.code, error.detail)
        refused.client_id = client.client_id
        raise refused from None
    except DatabaseUnavailable:
        raise  # retry
    except DatabaseError as error:  # permanent: what the command holds cannot be stored; a nack
        # would redeliver it until RabbitMQ dead-lettered it whole (images, tokens)
        log.warning(
            "%s %s refused by the database (%s)", envelope.command, envelope.message_id, type(error).__name__
        )
        await deps.processed.finish(client.client_id, envelope.message_id, CommandStatus.REJECTED)
        refused = Rejected(
            RejectReason.INVALID_REQUEST, f"the command could not be stored ({type(error).__name__})"
        )
        refused.client_id = client.client_id
        raise refused from None
    await deps.processed.finish(client.client_id, envelope.message_id, CommandStatus.DONE)
    return client


async def _parsed(command: str, body: bytes) -> BaseModel:
    """The body as its request model; a large one (images) is parsed off the event loop."""
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse_body(command, body)
    return await asyncio.to_thread(parse_body, command, body)


async def _charge(client: BrokerClient, deps: CommandDeps) -> None:
    if deps.limiter is None or not deps.settings.rate_limits:
        return
    limits = Limits(client.rate_per_second, client.burst, client.monthly_quota)
    decision = await deps.limiter.take(client.client_id, limits, datetime.now(UTC))
    if not decision.allowed:
        raise Rejected(
            decision.code or "RATE_LIMITED",
            f"over the client's rate limit or monthly quota; retry after {decision.retry_after_s} s",
        )


def _caller(client: BrokerClient) -> Caller:
    return Caller(owner=client.client_id, client_id=client.client_id)


async def _run(envelope: Envelope, body: object, client: BrokerClient, deps: CommandDeps) -> None:
    correlation_id = envelope.correlation_id or envelope.message_id or ""
    if isinstance(body, CompareRequest):
        await _compare(envelope, body, client, correlation_id, deps)
    elif isinstance(body, CreateSessionRequest):
        await _start_session(envelope, body, client, correlation_id, deps)
    elif isinstance(body, CreateCallRequest):
        await _join_call(envelope, body, client, correlation_id, deps)
    else:  # pragma: no cover - PUBLIC_COMMAND_BODIES and these branches list the same commands
        raise Rejected(RejectReason.UNKNOWN_COMMAND, envelope.command)


async def _compare(
    envelope: Envelope, body: CompareRequest, client: BrokerClient, correlation_id: str, deps: CommandDeps
) -> None:
    settings = deps.settings

    async def image(value: str, field: str) -> ImageData:
        data = await read_image_field(  # off the event loop, as the gateway does
            value, field=field, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
        return ImageData(inline=data)

    command = CompareFaces(
        correlation_id=correlation_id,
        client_id=client.client_id,
        source=await image(body.source, "source"),
        target=await image(body.target, "target"),
        threshold=body.threshold,
        target_false_match_rate=body.target_false_match_rate,
        quality_filter=body.quality_filter,
        max_target_faces=settings.max_target_faces,
    )
    try:  # the images travel inline: together they must fit one message (the broker refuses more)
        check_size(len(command.model_dump_json().encode()))
    except MessageTooLarge:
        raise Rejected(
            ErrorCode.IMAGE_TOO_LARGE.value,
            f"together the images are over {MAX_MESSAGE_BYTES} bytes once base64-encoded: "
            "send smaller images",
        ) from None
    # The matcher answers reply_to itself (or publishes FacesCompared, which we relay).
    await deps.outbox.compare(command, reply_to=envelope.reply_to, correlation_id=correlation_id)


async def _start_session(
    envelope: Envelope,
    body: CreateSessionRequest,
    client: BrokerClient,
    correlation_id: str,
    deps: CommandDeps,
) -> None:
    # The message id stands in for clientRequestToken: a redelivered command finds its session.
    if body.client_request_token is None:
        body = body.model_copy(update={"client_request_token": envelope.message_id})
    record, token = await deps.sessions.create(body, _caller(client))
    base = deps.settings.public_url
    event = SessionCreated(
        correlation_id=correlation_id,
        client_id=client.client_id,
        session_id=record.id,
        status=record.status,
        expires_at=record.expires_at,
        client_token=token,
        client_url=client_url(base, record.id, token) if base else None,
    )
    await _answer(event, envelope, client, PublicEventKey.SESSION_CREATED, correlation_id, deps)


async def _join_call(
    envelope: Envelope,
    body: CreateCallRequest,
    client: BrokerClient,
    correlation_id: str,
    deps: CommandDeps,
) -> None:
    # A flow id derived from the command: a redelivery finds the flow instead of starting another.
    flow_id = str(uuid5(NAMESPACE_URL, f"faceproof:call:{client.client_id}:{envelope.message_id}"))
    flow = await deps.calls.flows.get(client.client_id, flow_id)
    if flow is None:
        flow = await deps.calls.create(body, body.settings, _caller(client), flow_id=flow_id)
    created = call_created(flow, body.lang)
    event = CallStarted(
        correlation_id=correlation_id, client_id=client.client_id, **created.model_dump(by_alias=False)
    )
    # The answer before the ask: a room that fails at once must not have its call.failed overtake it.
    await _answer(event, envelope, client, PublicEventKey.CALL_STARTED, correlation_id, deps)
    await deps.calls.resume(body, _caller(client), flow)  # once: not again on a redelivery


async def _answer(
    event: Event, envelope: Envelope, client: BrokerClient, key: str, correlation_id: str, deps: CommandDeps
) -> None:
    if envelope.reply_to:
        await deps.outbox.reply(event, reply_to=envelope.reply_to, correlation_id=correlation_id)
    else:
        await deps.outbox.public(event, client_id=client.client_id, key=key)


async def reject(
    *,
    command: str,
    message_id: str | None,
    correlation_id: str | None,
    reply_to: str | None,
    client_id: str | None,
    rejection: Rejected,
    outbox: Outbox,
) -> CommandRejected:
    """Tell the publisher why: on its reply queue (if any) and on its public events (if known)."""
    correlation_id = correlation_id or message_id or "unknown"
    event = CommandRejected(
        correlation_id=correlation_id,
        client_id=client_id,
        rejected_message_id=message_id,
        command=command[:64],
        reason=rejection.reason,
        detail=rejection.detail[:500],
    )
    if reply_to:
        await outbox.reply(event, reply_to=reply_to, correlation_id=correlation_id)
    if client_id:
        await outbox.public(event, client_id=client_id, key=PublicEventKey.COMMAND_REJECTED)
    return event
