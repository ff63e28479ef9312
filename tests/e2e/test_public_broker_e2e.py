"""The public broker API, as an upstream system uses it: plain aio-pika (not the project's own
broker wiring), its own RabbitMQ user created by `faceproof broker setup`, real photos."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pamqp.encode
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import ChannelClosed

from contracts.events import CallFailed, FacesCompared
from contracts.public import CallStarted, CommandRejected, SessionCreated
from infra.db.engine import create_engine, session_factory
from infra.db.repositories import SessionRepository
from tests.e2e.conftest import Stack, free_port, image_b64
from tests.paths import PEOPLE, REPO_ROOT

pytestmark = pytest.mark.e2e

COMMANDS = "faceproof.public.v1.commands"
EVENTS = "faceproof.public.v1.events"
WAIT_S = 120
#: What each of the upstream user's own queues may hold (`broker setup --max-queue-bytes`).
QUEUE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Upstream:
    user: str
    password: str
    client_id: str
    api_key: str
    url: str


def _cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "faceproof", *args],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def upstream(stack: Stack) -> Iterator[Upstream]:
    name = f"upstream-{uuid.uuid4().hex[:8]}"
    api_key = _cli(stack, "keys", "create", name).strip().splitlines()[-1]
    user, password = f"up-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    out = _cli(
        stack, "broker", "setup", "--user", user, "--password", password, "--client", name,
        "--vhost", stack.vhost.name, "--max-queue-bytes", str(QUEUE_BYTES),
    )  # fmt: skip
    client_id = out.split("acts for API client ")[1].split()[0]
    yield Upstream(
        user, password, client_id, api_key, f"amqp://{user}:{password}@127.0.0.1:5672/{stack.vhost.name}"
    )
    subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False)


@pytest.fixture
async def connection(upstream: Upstream) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(upstream.url)
    try:
        yield connection
    finally:
        await connection.close()


async def _own_queue(channel: AbstractChannel, upstream: Upstream, *keys: str) -> AbstractQueue:
    queue = await channel.declare_queue(
        f"upstream.{upstream.user}.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
    )
    events = await channel.get_exchange(EVENTS, ensure=False)
    for key in keys:
        await queue.bind(events, routing_key=key)
    return queue


async def _publish(
    channel: AbstractChannel,
    upstream: Upstream,
    key: str,
    body: bytes | dict[str, Any],
    *,
    reply_to: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
) -> str:
    message_id = message_id or uuid.uuid4().hex
    exchange = await channel.get_exchange(COMMANDS, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            body if isinstance(body, bytes) else json.dumps(body).encode(),
            content_type="application/json",
            message_id=message_id,
            correlation_id=correlation_id or f"corr-{message_id}",
            reply_to=reply_to,
            user_id=upstream.user,
            headers={"x-schema-version": "1"},
        ),
        routing_key=key,
    )
    return message_id


async def _next(queue: AbstractQueue, within_s: float = WAIT_S) -> AbstractIncomingMessage:
    async with asyncio.timeout(within_s):
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.2)


async def _nothing_more(queue: AbstractQueue, seconds: float) -> bool:
    try:
        await _next(queue, seconds)
    except TimeoutError:
        return True
    return False


async def test_compare_with_reply_to_answers_on_the_publishers_queue(
    connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    replies = await _own_queue(channel, upstream)
    same = await _publish(
        channel,
        upstream,
        "compare.faces",
        {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")},
        reply_to=replies.name,
    )
    answer = await _next(replies)
    assert answer.correlation_id == f"corr-{same}"
    event = FacesCompared.model_validate_json(answer.body)
    assert event.error is None and event.match is True and event.client_id == upstream.client_id

    other = await _publish(
        channel,
        upstream,
        "compare.faces",
        {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "biden.jpg")},
        reply_to=replies.name,
    )
    answer = await _next(replies)
    assert answer.correlation_id == f"corr-{other}"
    assert FacesCompared.model_validate_json(answer.body).match is False


async def test_compare_without_reply_to_goes_to_the_clients_events(
    connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    events = await _own_queue(channel, upstream, f"{upstream.client_id}.faces.compared")
    sent = await _publish(
        channel,
        upstream,
        "compare.faces",
        {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")},
    )
    answer = await _next(events)
    assert answer.routing_key == f"{upstream.client_id}.faces.compared"
    assert FacesCompared.model_validate_json(answer.body).correlation_id == f"corr-{sent}"


async def _dead_letters(stack: Stack, queue_name: str = "ingress.public-commands.dlq") -> int:
    connection = await aio_pika.connect_robust(stack.vhost.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _letters_of(stack: Stack, message_ids: set[str]) -> list[AbstractIncomingMessage]:
    """The ingress's dead letters of these commands (every letter is read, then put back)."""
    connection = await aio_pika.connect_robust(stack.vhost.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("ingress.public-commands.dlq", passive=True)
        read: list[AbstractIncomingMessage] = []
        while (letter := await queue.get(no_ack=False, fail=False)) is not None:
            read.append(letter)
        for letter in read:
            await letter.nack(requeue=True)
        return [letter for letter in read if letter.message_id in message_ids]
    finally:
        await connection.close()


async def _rejection(
    channel: AbstractChannel, upstream: Upstream, key: str, body: bytes | dict[str, Any]
) -> Any:
    replies = await _own_queue(channel, upstream)
    sent = await _publish(channel, upstream, key, body, reply_to=replies.name)
    rejected = CommandRejected.model_validate_json((await _next(replies)).body)
    assert rejected.rejected_message_id == sent and rejected.correlation_id == f"corr-{sent}"
    return rejected


async def test_malformed_and_oversized_commands_are_rejected_and_dead_lettered(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    events = await _own_queue(channel, upstream, f"{upstream.client_id}.command.rejected")
    before = await _dead_letters(stack)

    malformed = await _rejection(channel, upstream, "compare.faces", b"{not json")
    assert malformed.reason == "MALFORMED_JSON"
    missing = await _rejection(
        channel, upstream, "compare.faces", {"source": image_b64(PEOPLE / "obama.jpg")}
    )
    assert missing.reason == "INVALID_REQUEST" and "target" in missing.detail
    huge = "A" * (14 * 1024 * 1024)  # over the 10 MiB image limit, as POST /v1/compare answers 413
    oversized = await _rejection(channel, upstream, "compare.faces", {"source": huge, "target": huge})
    assert oversized.reason == "IMAGE_TOO_LARGE"
    not_an_image = base64.b64encode(b"GIF89a" + b"\0" * 64).decode()
    invalid = await _rejection(
        channel, upstream, "compare.faces", {"source": not_an_image, "target": not_an_image}
    )
    assert invalid.reason == "INVALID_IMAGE"
    unknown = await _rejection(channel, upstream, "faces.delete", {})
    assert unknown.reason == "UNKNOWN_COMMAND"
    refused_url = await _rejection(
        channel, upstream, "session.start", {"reference": "http://169.254.169.254/latest/meta-data"}
    )
    assert refused_url.reason == "REFERENCE_URL_REFUSED"
    # PostgreSQL stores no NUL: it was a database error, a nack, and the whole body dead-lettered
    nul = await _rejection(channel, upstream, "session.start", {"clientRequestToken": "a\u0000b"})
    assert nul.reason == "INVALID_CHARACTER"

    # the same events on the client's public events, and each command in the dead-letter queue
    reasons = {CommandRejected.model_validate_json((await _next(events)).body).reason for _ in range(7)}
    assert reasons == {
        "MALFORMED_JSON", "INVALID_REQUEST", "IMAGE_TOO_LARGE", "INVALID_IMAGE", "UNKNOWN_COMMAND",
        "REFERENCE_URL_REFUSED", "INVALID_CHARACTER",
    }  # fmt: skip
    for _ in range(60):
        if await _dead_letters(stack) >= before + 7:
            break
        await asyncio.sleep(0.5)
    assert await _dead_letters(stack) >= before + 7
    # the ingress counts what it published on the client's public keys, and names no client
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"http://127.0.0.1:{stack.metrics_ports['ingress']}/metrics")).text
    assert 'routing_key="*.command.rejected"' in metrics
    assert upstream.client_id not in metrics


async def test_a_reply_queue_that_refuses_every_answer_stalls_no_one_and_keeps_no_photo(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    """The attack: the client's own reply queue refuses every message (``x-max-length: 0``,
    ``x-overflow: reject-publish``); it sends as many commands that will be refused as the ingress
    takes at once, photos inside, and a compare, all answering there. RabbitMQ's nack of each
    answer counted as "the broker is down": each held its slot through paced retries while every
    client's commands waited (29.7 s), then RabbitMQ dead-lettered the whole body, photos and all,
    and the matcher redid the compare until its images went to its dead letters. Now the answer
    is dropped; the command is refused as any other, with a redacted record."""
    channel = await connection.channel(publisher_confirms=True)
    refusing = await channel.declare_queue(
        f"upstream.{upstream.user}.{uuid.uuid4().hex[:8]}",
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    photo = image_b64(PEOPLE / "obama.jpg")
    matcher_letters = await _dead_letters(stack, "matcher.compare-faces.dlq")
    refused = {
        await _publish(
            channel, upstream, "compare.faces", {"source": photo, "target": photo, "threshold": "high"},
            reply_to=refusing.name,
        )
        for _ in range(4)  # the ingress's prefetch (FACEPROOF_BROKER_PREFETCH)
    }  # fmt: skip
    await _publish(
        channel, upstream, "compare.faces", {"source": photo, "target": photo}, reply_to=refusing.name
    )

    replies = await _own_queue(channel, upstream)
    sent = await _publish(
        channel,
        upstream,
        "compare.faces",
        {"source": photo, "target": image_b64(PEOPLE / "obama2.jpg")},
        reply_to=replies.name,
    )
    answer = await _next(replies, within_s=15)  # behind the four refused ones
    assert answer.correlation_id == f"corr-{sent}"
    assert FacesCompared.model_validate_json(answer.body).match is True

    async with asyncio.timeout(30):
        while len(letters := await _letters_of(stack, refused)) < len(refused):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    assert {letter.message_id for letter in letters} == refused
    for letter in letters:
        assert letter.headers.get("x-faceproof-redacted") and letter.body == b"", letter.headers
    assert await _dead_letters(stack, "matcher.compare-faces.dlq") == matcher_letters


async def test_a_reply_to_outside_the_publishers_namespace_is_refused_and_nothing_is_published(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    """The attack: client B names someone else's queue as reply_to (an internal worker queue,
    another client's, one whose name only starts like B's) with A's session id as correlation_id,
    hoping faceproof's own connection answers there. Every one is refused; no queue gets anything."""
    with stack.client() as http:  # client A's session
        created = http.post("/v1/sessions", json={"clientRequestToken": uuid.uuid4().hex})
        assert created.status_code == 201, created.text
        victim = created.json()["sessionId"]
    admin = await aio_pika.connect_robust(stack.vhost.url)
    try:
        admin_channel = await admin.channel()
        probes = [
            await admin_channel.declare_queue(name, auto_delete=True)
            for name in (
                f"liveness.probe-{uuid.uuid4().hex[:8]}",  # stands for any internal queue
                f"upstream.other-{uuid.uuid4().hex[:8]}.replies",  # another client's
                f"upstream.{upstream.user}x.replies",  # starts like B's user name, is not B's
            )
        ]
        channel = await connection.channel(publisher_confirms=True)
        events = await _own_queue(channel, upstream, f"{upstream.client_id}.command.rejected")
        body = {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")}
        for probe in probes:
            await _publish(
                channel, upstream, "compare.faces", body, reply_to=probe.name, correlation_id=victim
            )
            rejected = CommandRejected.model_validate_json((await _next(events)).body)
            assert rejected.reason == "INVALID_REPLY_TO" and rejected.correlation_id == victim
        # a legitimate compare is answered: the ones before it were not merely slow
        replies = await _own_queue(channel, upstream)
        await _publish(channel, upstream, "compare.faces", body, reply_to=replies.name)
        assert FacesCompared.model_validate_json((await _next(replies)).body).match is True
        for probe in probes:
            assert await probe.get(no_ack=True, fail=False) is None, probe.name
    finally:
        await admin.close()
    with stack.client() as http:
        session = http.get(f"/v1/sessions/{victim}").json()
    assert session["status"] == "CREATED" and session.get("comparisonResult") is None


def _garbage(rng: random.Random) -> tuple[str, bytes, dict[str, Any]]:
    """A random routing key, body and AMQP properties: the shapes a broken or hostile publisher sends."""
    key = rng.choice(["compare.faces", "session.start", "call.join", "", "#", "x" * 255, "compare.faces.x"])
    bodies: list[bytes] = [
        rng.randbytes(rng.randint(0, 2048)),
        b"[" * 5000 + b"]" * 5000,
        json.dumps({"source": "\u0000" * 50, "target": None}).encode(),
        json.dumps({"settings": {"challenges": -1, "language": "x" * 5000}}).encode(),
        json.dumps({"ws_url": "ws://169.254.169.254/", "callback_base_url": "file:///etc/passwd"}).encode(),
        json.dumps([rng.random() for _ in range(100)]).encode(),
        b'{"source": "' + b"A" * 100_000 + b'"',
        b"",
    ]
    headers: dict[str, Any] = rng.choice(
        [{}, {"x-schema-version": 2}, {"x-schema-version": ["1"]}, {"x-schema-version": 1.5}, {"a": "b"}]
    )
    properties: dict[str, Any] = {
        "message_id": rng.choice([None, "", uuid.uuid4().hex, "m" * 200]),
        "correlation_id": rng.choice([None, "", "c" * 255, uuid.uuid4().hex]),
        "reply_to": rng.choice([None, "", "matcher.compare-faces", "amq.rabbitmq.reply-to.x", "q" * 255]),
        "content_type": rng.choice([None, "application/json", "text/plain", "\x00"]),
        "headers": headers,
    }
    return key, rng.choice(bodies), properties


async def test_random_and_malformed_commands_crash_nothing_and_leave_nothing_unacked(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    rng = random.Random(20261205)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(COMMANDS, ensure=False)
    for _ in range(80):
        key, body, properties = _garbage(rng)
        await exchange.publish(aio_pika.Message(body, user_id=upstream.user, **properties), routing_key=key)

    admin = await aio_pika.connect(stack.vhost.url)  # not robust: that one repeats its first count
    try:

        async def pending() -> tuple[int, int]:
            channel = await admin.channel()
            queue = await channel.declare_queue("ingress.public-commands", passive=True)
            await channel.close()
            result = queue.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)

        for _ in range(240):
            if (await pending())[0] == 0:
                break
            await asyncio.sleep(0.5)
        messages, consumers = await pending()
        assert messages == 0 and consumers >= 1  # every message taken, the ingress still consuming
    finally:
        await admin.close()
    # and it still serves a well-formed command
    replies = await _own_queue(channel, upstream)
    body = {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")}
    await _publish(channel, upstream, "compare.faces", body, reply_to=replies.name)
    assert FacesCompared.model_validate_json((await _next(replies)).body).match is True


async def test_a_duplicate_message_id_is_processed_once(
    connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    replies = await _own_queue(channel, upstream)
    body = {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")}
    message_id = await _publish(channel, upstream, "compare.faces", body, reply_to=replies.name)
    await _publish(channel, upstream, "compare.faces", body, reply_to=replies.name, message_id=message_id)
    first = await _next(replies)
    assert FacesCompared.model_validate_json(first.body).match is True
    assert await _nothing_more(replies, 8)


async def test_start_session_is_the_same_session_as_over_http(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    replies = await _own_queue(channel, upstream)
    settings = {"challenges": 2, "language": "es"}
    await _publish(channel, upstream, "session.start", {"settings": settings}, reply_to=replies.name)
    created = SessionCreated.model_validate_json((await _next(replies)).body)
    assert created.client_token and created.client_url and created.client_url.startswith(stack.url)

    with stack.client(upstream.api_key) as http:
        over_broker = http.get(f"/v1/sessions/{created.session_id}")
        assert over_broker.status_code == 200, over_broker.text
        over_http = http.post("/v1/sessions", json={"settings": settings})
        assert over_http.status_code == 201
        again = http.get(f"/v1/sessions/{over_http.json()['sessionId']}").json()
    one = over_broker.json()
    assert one["status"] == again["status"] == "CREATED"
    assert set(one) == set(again)
    # the hosted page accepts the client token the broker answer carries
    with stack.client(created.client_token) as page:
        assert page.get(f"/v1/sessions/{created.session_id}/status").status_code == 200
    # another client cannot see it
    with stack.client() as static:
        assert static.get(f"/v1/sessions/{created.session_id}").status_code == 404


async def _camera_joined(stack: Stack, session_id: str) -> None:
    """The subject started: its browser's offer claimed the camera connection (as
    ``POST /v1/sessions/{id}/offer`` does), then hung up."""
    engine = create_engine(stack.env["FACEPROOF_DATABASE_URL"])
    try:
        sessions = SessionRepository(session_factory(engine))
        connection = uuid.uuid4().hex
        assert await sessions.claim_connection(session_id, connection, stale_after_s=30)
        assert await sessions.release_connection(session_id, connection)
    finally:
        await engine.dispose()


async def test_a_subject_locked_out_over_http_is_refused_over_the_broker(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    """The attack: a subject whose attempts failed (here: five sessions its camera joined, then
    erased mid-way: each ends FAILED, reason ERASED) is locked out over HTTP, so the client tries
    the broker door instead."""
    subject = {"subjectKey": f"user-{uuid.uuid4().hex[:8]}"}
    with stack.client(upstream.api_key) as http:
        for _ in range(5):
            created = http.post("/v1/sessions", json={"settings": subject})
            assert created.status_code == 201, created.text
            await _camera_joined(stack, created.json()["sessionId"])
            assert http.delete(f"/v1/sessions/{created.json()['sessionId']}").status_code == 204
        refused = http.post("/v1/sessions", json={"settings": subject})
        assert refused.status_code == 429 and refused.json()["code"] == "SUBJECT_LOCKED_OUT"

    channel = await connection.channel(publisher_confirms=True)
    replies = await _own_queue(channel, upstream)
    await _publish(channel, upstream, "session.start", {"settings": subject}, reply_to=replies.name)
    rejected = CommandRejected.model_validate_json((await _next(replies)).body)
    assert rejected.reason == "SUBJECT_LOCKED_OUT" and rejected.command == "session.start"
    assert await _nothing_more(replies, 3)  # and no SessionCreated: no session was made for it
    # another subject of the same client is not locked
    other = {"settings": {"subjectKey": f"user-{uuid.uuid4().hex[:8]}"}}
    await _publish(channel, upstream, "session.start", other, reply_to=replies.name)
    assert SessionCreated.model_validate_json((await _next(replies)).body).session_id


async def test_join_call_starts_a_flow_like_post_join_call(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    keys = (f"{upstream.client_id}.call.started", f"{upstream.client_id}.call.failed")
    events = await _own_queue(channel, upstream, *keys)
    body = {
        "ws_url": f"ws://127.0.0.1:{free_port()}/room",  # nobody listens: the room is unreachable
        "callback_base_url": f"http://127.0.0.1:{free_port()}/cb",
        "token": "t",
        "lang": "es-MX",
    }
    await _publish(channel, upstream, "call.join", body)
    started = CallStarted.model_validate_json((await _next(events)).body)
    assert started.language == "es" and started.language_fallback is False

    with stack.client(upstream.api_key) as http:
        flow = http.get(f"/v1/calls/{started.flow_id}")
        assert flow.status_code == 200, flow.text
        assert flow.json()["sessionId"] == started.session_id
        over_http = http.post("/join-call", json=body)
        assert over_http.status_code == 202
        same = {"flowId", "sessionId", "status", "language", "requestedLanguage", "languageFallback"}
        assert same <= set(over_http.json())
        assert over_http.json()["status"] == started.status

    # the room cannot be reached: the call agent's CallFailed reaches the client's events
    failed = CallFailed.model_validate_json((await _next(events)).body)
    assert failed.flow_id == started.flow_id and failed.reason == "ROOM_UNREACHABLE"


async def test_an_upstream_users_own_queues_and_connections_are_bounded(
    connection: AbstractRobustConnection, upstream: Upstream
) -> None:
    """The attack: an upstream user fills queues of its own (its permissions let it declare them and
    an exchange to publish into them) until RabbitMQ's memory or disk alarm blocks every
    publisher, faceproof's workers included. `broker setup` bounds its queues (an operator policy
    it cannot raise: bytes, message age, idle time) and its connections and channels."""
    channel = await connection.channel(publisher_confirms=True)
    own = f"upstream.{upstream.user}.{uuid.uuid4().hex[:8]}"
    store = await channel.declare_queue(f"{own}.store", auto_delete=True)
    fill = await channel.declare_exchange(f"{own}.fill", aio_pika.ExchangeType.FANOUT, auto_delete=True)
    await store.bind(fill)
    for _ in range(6):
        await fill.publish(aio_pika.Message(b"x" * (QUEUE_BYTES // 2)), routing_key="")
    kept = await channel.declare_queue(store.name, passive=True)
    assert (kept.declaration_result.message_count or 0) <= 2  # six were published
    listed = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "list_user_limits", "--user", upstream.user],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    limits = listed.stdout
    assert json.loads(limits) == {"max-connections": 16, "max-channels": 128}


async def test_rabbitmq_refuses_the_internal_exchanges_to_an_upstream_user(upstream: Upstream) -> None:
    connection = await aio_pika.connect(upstream.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        internal = await channel.get_exchange("faceproof.commands", ensure=False)
        with pytest.raises(ChannelClosed) as refused:
            await internal.publish(
                aio_pika.Message(b"{}", user_id=upstream.user), routing_key="compare.faces"
            )
        assert "ACCESS_REFUSED" in str(refused.value)

        channel = await connection.channel()
        with pytest.raises(ChannelClosed) as refused:
            internal_queue = await channel.get_queue("matcher.compare-faces", ensure=False)
            await internal_queue.get(fail=False)  # reading another service's queue
        assert "ACCESS_REFUSED" in str(refused.value)

        # binding another client's events (or all of them) is refused by the topic permission
        channel = await connection.channel()
        queue = await channel.declare_queue(f"upstream.{upstream.user}.spy", exclusive=True)
        events = await channel.get_exchange(EVENTS, ensure=False)
        with pytest.raises(ChannelClosed) as refused:
            await queue.bind(events, routing_key="#")
        assert "ACCESS_REFUSED" in str(refused.value)

        # a user_id that is not the connection's user is refused too: identities cannot be forged
        channel = await connection.channel(publisher_confirms=True)
        commands = await channel.get_exchange(COMMANDS, ensure=False)
        with pytest.raises(ChannelClosed) as forged:
            await commands.publish(aio_pika.Message(b"{}", user_id="guest"), routing_key="compare.faces")
        assert "PRECONDITION_FAILED" in str(forged.value)
    finally:
        await connection.close()


async def test_properties_that_are_not_utf8_are_refused_and_cost_no_one_else_anything(
    stack: Stack, connection: AbstractRobustConnection, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RabbitMQ passes AMQP short strings through unchecked; pamqp decoded them as strict UTF-8, so
    # one command whose message_id was b"\xff\xfe" closed the ingress's connection before any
    # handler ran, again on every redelivery, and each time counted every message in flight (other
    # clients' commands, the event relays') against its delivery limit. This publisher writes such
    # bytes (its own encoder patched: aio-pika refuses to), then a well-formed compare behind them.
    # (Header names that are not UTF-8: tests/unit/test_amqp_strings.py.)
    strict = pamqp.encode._string

    def raw_bytes_allowed(encoder: Any, value: Any) -> bytes:
        return encoder.pack(len(value)) + value if isinstance(value, bytes) else strict(encoder, value)

    monkeypatch.setattr(pamqp.encode, "_string", raw_bytes_allowed)
    channel = await connection.channel(publisher_confirms=True)
    events = await _own_queue(channel, upstream, f"{upstream.client_id}.command.rejected")
    replies = await _own_queue(channel, upstream)
    body = json.dumps(
        {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")}
    ).encode()
    exchange = await channel.get_exchange(COMMANDS, ensure=False)
    poisoned: list[dict[str, Any]] = [
        {"message_id": b"\xff\xfe-bad", "correlation_id": "poison-1"},
        {"message_id": uuid.uuid4().hex, "correlation_id": b"\xc3("},
    ]
    for properties in poisoned:
        message = aio_pika.Message(body, user_id=upstream.user, content_type="application/json")
        for name, value in properties.items():
            setattr(message, name, value)
        await exchange.publish(message, routing_key="compare.faces")
    await _publish(channel, upstream, "compare.faces", body, reply_to=replies.name)

    answer = FacesCompared.model_validate_json((await _next(replies, within_s=60)).body)
    assert answer.match is True
    rejected = [CommandRejected.model_validate_json((await _next(events, 30)).body) for _ in poisoned]
    assert {r.reason for r in rejected} == {"INVALID_CHARACTER"}
    assert await _nothing_more(replies, 3)  # the poisoned compares ran nowhere
