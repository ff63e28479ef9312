"""The broker ingress's handlers (services/ingress/handlers.py) against in-memory ports: what an
upstream sees (the answer or the CommandRejected, and where it goes), what runs inside (the
forwarded CompareFaces, the stored session or flow) and what is dead-lettered."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable

import pytest

from contracts.commands import CompareFaces
from contracts.events import LivenessDecided, SessionFinished
from contracts.public import CallStarted, CommandRejected, SessionCreated
from contracts.routing import PublicEventKey
from contracts.values import SessionStatus
from infra.db.ingress import CommandStatus
from infra.settings import Settings
from services.ingress.handlers import Delivery, receive, relay
from services.intake.errors import Unavailable
from tests.unit.ingress.fakes import FakeLimiter, FakeOutbox, Ingress
from tests.unit.intake.fakes import jpeg

REPLY_TO = "upstream.upstream.answers"
ROOM = {"ws_url": "wss://rooms.example/room/1", "callback_base_url": "https://c.example/cb/", "token": "t"}


def delivery(
    command: str,
    *,
    message_id: str | None = "m-1",
    user_id: str | None = "upstream",
    reply_to: str | None = None,
    redelivered: bool = False,
    headers: dict[str, object] | None = None,
) -> Delivery:
    return Delivery(
        routing_key=command,
        message_id=message_id,
        correlation_id=None,
        reply_to=reply_to,
        user_id=user_id,
        exchange="faceproof.public.v1.commands",
        headers=headers or {},
        redelivered=redelivered,
    )


def body(value: dict[str, object]) -> bytes:
    return json.dumps(value).encode()


async def run(ingress: Ingress, message: Delivery, payload: bytes) -> None:
    await receive(message, payload, deps=ingress.deps, dead_letter=ingress.dead_letters)


def compare_body() -> bytes:
    image = base64.b64encode(jpeg()).decode()
    return body({"source": image, "target": image, "threshold": 0.4})


# --------------------------------------------------------------------------- commands that run


async def test_compare_is_forwarded_inside_with_the_images_and_the_publishers_reply_to() -> None:
    ingress = Ingress()
    await run(ingress, delivery("compare.faces", reply_to=REPLY_TO), compare_body())
    [sent] = ingress.outbox.sent
    assert sent.where == "inside" and sent.target == REPLY_TO and sent.correlation_id == "m-1"
    command = sent.message
    assert isinstance(command, CompareFaces)
    assert command.client_id == "client-1" and command.threshold == 0.4
    assert command.source.inline == jpeg() and command.target.inline == jpeg()
    assert ingress.processed.rows == {("client-1", "m-1"): CommandStatus.DONE}
    assert ingress.dead_letters.letters == []


async def test_session_start_answers_on_the_clients_public_events_with_the_hosted_page() -> None:
    ingress = Ingress(settings=Settings(public_url="https://faceproof.example"))
    await run(ingress, delivery("session.start"), body({"settings": {"expiresInS": 120}}))
    [sent] = ingress.outbox.sent
    assert (sent.where, sent.target) == ("public", "client-1." + PublicEventKey.SESSION_CREATED)
    event = sent.message
    assert isinstance(event, SessionCreated) and event.client_id == "client-1"
    [stored] = ingress.sessions.rows.values()
    assert event.session_id == stored.id and event.status is SessionStatus.CREATED
    assert stored.owner == "client-1" and stored.client_request_token == "m-1"  # the message id
    assert (
        event.client_url
        == f"https://faceproof.example/v1/sessions/{stored.id}/client#token={event.client_token}"
    )


async def test_a_redelivered_session_start_finds_the_session_it_created() -> None:
    ingress = Ingress()
    await run(ingress, delivery("session.start", reply_to=REPLY_TO), b"{}")
    ingress.processed.rows[("client-1", "m-1")] = CommandStatus.RUNNING  # the worker died before finish
    await run(ingress, delivery("session.start", reply_to=REPLY_TO, redelivered=True), b"{}")
    first, second = ingress.outbox.sent
    assert first.where == second.where == "reply" and first.target == REPLY_TO
    assert first.message.session_id == second.message.session_id
    assert len(ingress.sessions.rows) == 1


async def test_call_join_starts_one_flow_even_when_redelivered() -> None:
    ingress = Ingress()
    await run(ingress, delivery("call.join"), body({**ROOM, "lang": "es"}))
    ingress.processed.rows[("client-1", "m-1")] = CommandStatus.RUNNING
    await run(ingress, delivery("call.join", redelivered=True), body({**ROOM, "lang": "es"}))
    first, second = (sent.message for sent in ingress.outbox.sent)
    assert isinstance(first, CallStarted) and isinstance(second, CallStarted)
    assert first.flow_id == second.flow_id and first.session_id == second.session_id
    assert (second.language, second.requested_language, second.language_fallback) == ("es", "es", False)
    [join] = ingress.commands.sent  # one JoinCall for the call agents
    assert join.flow_id == first.flow_id and join.client_id == "client-1"
    assert list(ingress.flows.rows) == [first.flow_id]


async def test_a_call_join_whose_first_ask_did_not_go_out_asks_on_redelivery() -> None:
    """The flow was stored and answered (call.started goes out before the call agent is asked, so
    that a room failing at once cannot have its call.failed overtake it), then the broker refused
    its JoinCall: the command is nacked. Its redelivery found the flow and answered again, but no
    call agent was ever asked (the flow failed at its deadline). Now it asks then, once; a later
    redelivery does not ask again."""
    ingress = Ingress()
    ingress.commands.fail_first = 1
    with pytest.raises(Unavailable):  # transient: nacked, redelivered by the broker
        await run(ingress, delivery("call.join"), body(ROOM))
    [flow_id] = list(ingress.flows.rows)
    assert ingress.commands.sent == []
    assert [sent.message.flow_id for sent in ingress.outbox.sent] == [flow_id]  # type: ignore[attr-defined]
    for _ in range(2):
        await run(ingress, delivery("call.join", redelivered=True), body(ROOM))
        ingress.processed.rows[("client-1", "m-1")] = CommandStatus.RUNNING  # as if it died again
    [join] = ingress.commands.sent
    assert join.flow_id == flow_id and ingress.flows.rows[flow_id].join_sent_at is not None
    assert [sent.message.flow_id for sent in ingress.outbox.sent] == [flow_id] * 3  # type: ignore[attr-defined]


async def test_a_duplicate_message_id_is_dropped() -> None:
    ingress = Ingress()
    await run(ingress, delivery("compare.faces"), compare_body())
    await run(ingress, delivery("compare.faces", redelivered=True), compare_body())
    assert len(ingress.outbox.sent) == 1 and ingress.dead_letters.letters == []


# --------------------------------------------------------------------------- refusals


def rejection(outbox: FakeOutbox) -> tuple[list[str | None], CommandRejected]:
    targets = [sent.target for sent in outbox.sent]
    events = {sent.message for sent in outbox.sent}
    assert len(events) == 1, "one CommandRejected, wherever it goes"
    [event] = events
    assert isinstance(event, CommandRejected)
    return targets, event


async def test_an_unknown_broker_user_is_answered_on_its_reply_queue_only() -> None:
    ingress = Ingress()
    await run(
        ingress, delivery("compare.faces", user_id="stranger", reply_to="amq.rabbitmq.reply-to.x"), b"{}"
    )
    targets, event = rejection(ingress.outbox)
    assert targets == ["amq.rabbitmq.reply-to.x"]
    assert event.reason == "UNAUTHENTICATED" and event.client_id is None
    assert event.rejected_message_id == "m-1" and event.command == "compare.faces"
    [letter] = ingress.dead_letters.letters
    assert letter.reason == "UNAUTHENTICATED" and letter.user_id == "stranger" and letter.client_id is None
    assert ingress.processed.rows == {}


async def test_a_reply_to_outside_the_publishers_queues_is_never_answered() -> None:
    ingress = Ingress()
    await run(ingress, delivery("compare.faces", reply_to="liveness.frames"), compare_body())
    targets, event = rejection(ingress.outbox)
    assert targets == ["client-1." + PublicEventKey.COMMAND_REJECTED]  # its own events, not the queue
    assert event.reason == "INVALID_REPLY_TO" and event.client_id == "client-1"


async def test_a_refused_command_is_dead_lettered_without_its_body() -> None:
    ingress = Ingress()
    payload = b'{"source": "' + b"A" * 64 + b'", '  # cut short: not JSON
    await run(ingress, delivery("compare.faces", headers={"x-secret": "value"}), payload)
    _, event = rejection(ingress.outbox)
    assert event.reason == "MALFORMED_JSON"
    [letter] = ingress.dead_letters.letters
    assert (letter.size, letter.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert letter.header_names == ["x-secret"] and letter.client_id == "client-1"
    assert b"AAAA" not in repr(letter).encode() and "value" not in repr(letter)
    assert ingress.processed.rows == {("client-1", "m-1"): CommandStatus.REJECTED}


@pytest.mark.parametrize(
    ("message", "payload", "reason"),
    [
        (delivery("compare.faces", message_id=None), b"{}", "MISSING_MESSAGE_ID"),
        (delivery("compare.faces", headers={"x-schema-version": "2"}), b"{}", "UNSUPPORTED_SCHEMA_VERSION"),
        (delivery("delete.everything"), b"{}", "UNKNOWN_COMMAND"),
        (delivery("compare.faces"), b'{"source": "x"}', "INVALID_REQUEST"),
        (delivery("session.start"), body({"reference": "bm90IGFuIGltYWdl"}), "INVALID_IMAGE"),
        (delivery("session.start"), body({"clientRequestToken": "a\u0000b"}), "INVALID_CHARACTER"),
        (delivery("session.start", message_id="m\x00-1"), b"{}", "INVALID_CHARACTER"),
    ],
)
async def test_each_bad_command_is_rejected_with_its_reason(
    message: Delivery, payload: bytes, reason: str
) -> None:
    ingress = Ingress()
    await run(ingress, message, payload)
    targets, event = rejection(ingress.outbox)
    assert event.reason == reason and targets == ["client-1." + PublicEventKey.COMMAND_REJECTED]
    assert [letter.reason for letter in ingress.dead_letters.letters] == [reason]
    assert ingress.sessions.rows == {} and ingress.store.objects == {}


async def test_a_body_over_the_limit_is_rejected_before_it_is_parsed() -> None:
    ingress = Ingress(settings=Settings(max_body_bytes=1024))
    await run(ingress, delivery("compare.faces"), compare_body() + b" " * 1024)
    _, event = rejection(ingress.outbox)
    assert event.reason == "BODY_TOO_LARGE"


async def test_images_together_over_what_one_message_carries_are_rejected_and_nothing_is_sent() -> None:
    """Two photos of 7 MiB (each under the image limit): the forwarded CompareFaces would be over
    the 16 MiB a broker takes (RabbitMQ 4's default), refused on every redelivery."""
    padded = base64.b64encode(jpeg() + b"\x00" * (7 * 1024 * 1024)).decode()  # bytes after the image's end
    ingress = Ingress()
    await run(ingress, delivery("compare.faces"), body({"source": padded, "target": padded}))
    _, event = rejection(ingress.outbox)
    assert event.reason == "IMAGE_TOO_LARGE" and "together the images are over 16711680 bytes" in event.detail
    assert [m for m in ingress.outbox.sent if m.where == "inside"] == []
    assert [letter.reason for letter in ingress.dead_letters.letters] == ["IMAGE_TOO_LARGE"]


async def test_a_command_the_database_refuses_for_good_is_rejected_not_redelivered() -> None:
    """Injected fault: a permanent database error while the command runs (what it holds cannot be
    stored). A nack would redeliver it until RabbitMQ dead-lettered the whole body; it is rejected
    and dead-lettered redacted instead. The database down (retryable) still raises for a retry."""
    from infra.db.errors import DatabaseError, DatabaseUnavailable

    def refusing(error: DatabaseError) -> Callable[..., Awaitable[object]]:
        async def refuse(*args: object, **kwargs: object) -> object:
            raise error

        return refuse

    for error, rejected in ((DatabaseError("22021"), True), (DatabaseUnavailable("08006"), False)):
        ingress = Ingress()
        ingress.sessions.create = refusing(error)  # type: ignore[method-assign]
        if rejected:
            await run(ingress, delivery("session.start"), body({}))
            _, event = rejection(ingress.outbox)
            assert event.reason == "INVALID_REQUEST" and "could not be stored (DatabaseError)" in event.detail
            assert [letter.reason for letter in ingress.dead_letters.letters] == ["INVALID_REQUEST"]
        else:
            with pytest.raises(DatabaseUnavailable):
                await run(ingress, delivery("session.start"), body({}))


async def test_over_the_rate_limit_is_rejected_and_may_be_sent_again() -> None:
    ingress = Ingress(limiter=FakeLimiter(allowance=0))
    await run(ingress, delivery("compare.faces"), compare_body())
    _, event = rejection(ingress.outbox)
    assert event.reason == "RATE_LIMITED" and "retry after 7 s" in event.detail
    [(client, limits)] = ingress.limiter.taken if ingress.limiter else []
    assert client == "client-1" and (limits.burst, limits.monthly_quota) == (10, 1000)
    ingress.limiter = FakeLimiter()  # the bucket refilled: the same message id runs now
    await run(ingress, delivery("compare.faces"), compare_body())
    assert isinstance(ingress.outbox.sent[-1].message, CompareFaces)
    assert ingress.processed.rows == {("client-1", "m-1"): CommandStatus.DONE}


async def test_rate_limits_switched_off_take_nothing() -> None:
    ingress = Ingress(settings=Settings(rate_limits=False), limiter=FakeLimiter(allowance=0))
    await run(ingress, delivery("compare.faces"), compare_body())
    assert isinstance(ingress.outbox.sent[0].message, CompareFaces)
    assert ingress.limiter is not None and ingress.limiter.taken == []


# --------------------------------------------------------------------------- relayed events


async def test_an_event_goes_to_its_owners_public_events_and_nowhere_without_one() -> None:
    outbox = FakeOutbox()
    finished = SessionFinished(correlation_id="s-1", session_id="s-1", status=SessionStatus.EXPIRED)
    decided = LivenessDecided(correlation_id="s-2", session_id="s-2", is_live=True, confidence=0.9)
    await relay(finished, "client-7", PublicEventKey.SESSION_FINISHED, outbox)
    await relay(decided, None, PublicEventKey.LIVENESS_DECIDED, outbox)
    [sent] = outbox.sent
    assert sent.message is finished and sent.target == "client-7." + PublicEventKey.SESSION_FINISHED
