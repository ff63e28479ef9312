"""The liveness step's events through the transactional outbox, on real RabbitMQ (a throw-away
vhost), PostgreSQL (a fresh, migrated database) and the worker's relay.

The broker connection is cut (a TCP proxy between the worker and RabbitMQ) after the first
challenge's events went out and before the steps that decide: those steps commit, their events
(ChallengeVerdict, ChallengeIssued, LivenessDecided, MatchReferences) wait in the outbox, and once
the broker is back each goes out exactly once, in the order a client must see them.

The frames' analyses are the scripted ones of the unit tests (``tests/unit/liveness``): what this
test checks is the step's writes and the relay, not the face analysis (the worker tests cover that).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import pytest

from contracts.documents import SessionSettingsDocument, StoredChallenge
from contracts.events import FrameCaptured
from contracts.routing import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, CommandKey, EventKey
from infra.broker import create_broker
from infra.db.engine import create_engine, session_factory
from infra.db.liveness import LivenessRepository
from infra.db.outbox import SqlOutbox
from infra.db.repositories import SessionRepository
from infra.outbox import OutboxRelay
from infra.settings import Settings
from infra.storage import open_store
from services.liveness.handlers import Deps, handle_frame
from tests.integration.conftest import migrate
from tests.support import services
from tests.support.broker import RabbitVhost, temporary_vhost
from tests.support.tcp_proxy import TcpProxy
from tests.unit.liveness.fakes import NOW, FakeFrames
from tests.unit.liveness.test_liveness_step import CHALLENGES, FPS, LIVE_EVENTS, POSES, analysed

pytestmark = pytest.mark.integration

WAIT_S = 60.0
#: What a client sees before the cut: challenge 0 issued and passed, challenge 1 issued.
BEFORE_CUT = 16
OBSERVED = (
    (EVENTS_EXCHANGE, EventKey.CHALLENGE_ISSUED),
    (EVENTS_EXCHANGE, EventKey.CHALLENGE_VERDICT),
    (EVENTS_EXCHANGE, EventKey.LIVENESS_DECIDED),
    (COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES),
)


@pytest.fixture
def vhost() -> Iterator[RabbitVhost]:
    with temporary_vhost() as created:
        yield created


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    async with services.fresh_postgres_database() as url:
        await migrate(url)
        yield url


@pytest.fixture
def rabbit_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", 5672))
    yield proxy
    proxy.close()


class Observer:
    """The session's challenge events, its decision and its MatchReferences, in one queue (so in
    the order they were published), on its own connection (not through the proxy)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def start(self, stack: AsyncExitStack, url: str) -> None:
        connection = await aio_pika.connect_robust(url)
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for name, key in OBSERVED:
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            await queue.bind(exchange, routing_key=key)

        async def record(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                key = message.routing_key or ""
                self.seen.append((key, message.message_id or "", json.loads(message.body)))

        await queue.consume(record)

    def routing_keys(self) -> list[str]:
        return [key for key, _, _ in self.seen]


async def _until(what: Any, *, within_s: float = WAIT_S) -> None:
    async with asyncio.timeout(within_s):
        while not what():  # noqa: ASYNC110 - polling what the relay published
            await asyncio.sleep(0.05)


async def test_a_decision_waits_out_a_broker_cut_and_goes_out_once_in_order(
    vhost: RabbitVhost, database_url: str, rabbit_proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = Settings(
        broker_url=f"amqp://guest:guest@127.0.0.1:{rabbit_proxy.port}/{vhost.name}",
        database_url=database_url,
        outbox_poll_s=0.1,
        api_token="t",
    )
    session_id = str(uuid4())
    observer = Observer()
    async with AsyncExitStack() as stack:
        await observer.start(stack, vhost.url)
        engine = create_engine(database_url)
        stack.push_async_callback(engine.dispose)
        factory = session_factory(engine)
        sessions, states = SessionRepository(factory), LivenessRepository(factory)
        await sessions.create(
            "client-1",
            client_request_token=None,
            settings=SessionSettingsDocument(challenges=2, audit_images=2),
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
            reference_key=f"sessions/{session_id}/reference-input.jpg",
            session_id=session_id,
        )
        await states.create_state(
            session_id,
            challenges=[StoredChallenge(type=c.type, target=c.target) for c in CHALLENGES],
            started_at=NOW,
            connection_id="c1",
        )
        store = open_store(tmp_path.as_uri())
        await store.ensure_buckets()
        for sequence in range(len(POSES)):
            await store.put(_key(session_id, sequence), f"jpeg {sequence}".encode(), "image/jpeg")
        broker = create_broker(settings)
        await broker.connect()
        stack.push_async_callback(broker.stop)
        relay = OutboxRelay.for_process(factory, broker, settings)
        await stack.enter_async_context(relay.running())
        deps = Deps(
            sessions=sessions,
            states=states,
            store=store,
            frames=FakeFrames({n: analysed(n) for n in range(len(POSES))}),
            identity_threshold=0.35,
        )

        async def deliver(sequences: range) -> None:
            for sequence in sequences:
                await handle_frame(_frame(session_id, sequence), deps)

        await deliver(range(BEFORE_CUT))
        await _until(lambda: len(observer.seen) == 3)
        assert observer.routing_keys() == LIVE_EVENTS[:3]

        rabbit_proxy.cut()  # the broker is gone: the deciding steps commit and cannot publish
        await deliver(range(BEFORE_CUT, len(POSES)))
        state = await states.get(session_id)
        assert state is not None and state.decision is not None and state.decision.is_live
        await asyncio.sleep(2.0)  # the relay tries, and fails
        assert observer.routing_keys() == LIVE_EVENTS[:3]
        written = [m.routing_key for m in await SqlOutbox(factory).messages(session_id)]
        assert [k for k in written if k != EventKey.READINESS_CHECKED] == LIVE_EVENTS
        assert await SqlOutbox(factory).unsent() == 3  # the second verdict, the decision, the match

        rabbit_proxy.restore()
        await _until(lambda: CommandKey.MATCH_REFERENCES in observer.routing_keys())
        await deliver(range(len(POSES)))  # a redelivery of every frame writes nothing new
        await asyncio.sleep(2.0)  # time for a (wrong) second event

    assert observer.routing_keys() == LIVE_EVENTS
    assert [body["index"] for key, _, body in observer.seen if key == EventKey.CHALLENGE_ISSUED] == [0, 1]
    [(_, _, decided)] = [m for m in observer.seen if m[0] == EventKey.LIVENESS_DECIDED]
    assert decided["is_live"] is True and decided["reference_key"] == f"sessions/{session_id}/reference.jpg"
    [(_, match_id, _)] = [m for m in observer.seen if m[0] == CommandKey.MATCH_REFERENCES]
    assert match_id == state.match_request_id  # the one request whose answer counts
    assert len({message_id for _, message_id, _ in observer.seen}) == len(LIVE_EVENTS)


def _key(session_id: str, sequence: int) -> str:
    return f"sessions/{session_id}/frames/{sequence:08d}.jpg"


def _frame(session_id: str, sequence: int) -> FrameCaptured:
    return FrameCaptured(
        correlation_id=session_id,
        session_id=session_id,
        connection_id="c1",
        sequence=sequence,
        storage_key=_key(session_id, sequence),
        width=640,
        height=480,
        captured_at=NOW + timedelta(seconds=sequence / FPS),
    )
