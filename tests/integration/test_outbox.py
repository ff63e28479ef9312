"""The transactional outbox on real RabbitMQ (a throw-away vhost), PostgreSQL (a fresh, migrated
database), the real notifier and a real HTTP controller (the example controller).

The broker connection is cut (a TCP proxy between the processes and RabbitMQ) after the session's
ending committed and before its SessionFinished could be published: the event waits in the outbox,
goes out once the broker is back, and the controller gets exactly one callback. And when the
relay's database connection is cut after the broker confirmed and before the row was marked sent,
SessionFinished goes out twice with one message id, and the controller still gets one callback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from contracts.documents import FlowSettingsDocument, SessionSettingsDocument
from contracts.routing import EVENTS_EXCHANGE, EventKey
from contracts.values import SessionStatus
from domain.flows import DeliveryStatus
from domain.outgoing import Outgoing
from domain.records import CallFlowRecord
from domain.sessions import Expired
from examples.controller import Controller
from infra.broker import create_broker, declare_topology
from infra.db.engine import create_engine, session_factory
from infra.db.flows import CallFlowRepository
from infra.db.outbox import SqlOutbox
from infra.db.repositories import SessionRepository
from infra.db.tables import OutboxRow, SessionRow
from infra.lifecycle import SessionLifecycle
from infra.outbox import OutboxRelay
from infra.publisher import Publisher
from infra.safe_fetch import FetchPolicy
from infra.settings import Settings
from services.notifier.adapters import HttpCallbackSender, SafeReferenceSource
from services.notifier.main import ROUTES as NOTIFIER_ROUTES
from services.notifier.main import build_notifier
from tests.integration.conftest import migrate
from tests.support import services
from tests.support.broker import RabbitVhost, temporary_vhost
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

WAIT_S = 90.0


@pytest.fixture(scope="module")
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
def controller(tmp_path: Path) -> Iterator[Controller]:
    server = Controller(tmp_path, quiet=True).start()
    yield server
    server.stop()


@pytest.fixture
def rabbit_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", 5672))
    yield proxy
    proxy.close()


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    server = make_url(services.postgres_url())
    proxy = TcpProxy((server.host or "127.0.0.1", server.port or 5432))
    yield proxy
    proxy.close()


def _settings(broker_url: str, database_url: str) -> Settings:
    return Settings(
        broker_url=broker_url,
        database_url=database_url,
        fetch_allow_hosts="127.0.0.1",
        flow_sweep_s=0.2,
        callback_timeout_s=3.0,
        callback_backoff_s=0.2,
        callback_retry_deadline_s=60.0,
        outbox_poll_s=0.1,
        api_token="t",
    )


def _rabbit_through(proxy: TcpProxy, vhost: RabbitVhost) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"


def _postgres_through(proxy: TcpProxy, database_url: str) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


class Observer:
    """Every SessionFinished on the events exchange (its own connection, not through a proxy)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def start(self, stack: AsyncExitStack, url: str) -> None:
        connection = await aio_pika.connect_robust(url)
        stack.push_async_callback(connection.close)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=EventKey.SESSION_FINISHED)

        async def record(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.seen.append((message.message_id or "", json.loads(message.body)))

        await queue.consume(record)

    def finished(self, session_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(mid, body) for mid, body in self.seen if body.get("session_id") == session_id]


async def _start_notifier(stack: AsyncExitStack, settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    stack.push_async_callback(engine.dispose)
    factory = session_factory(engine)
    policy = FetchPolicy.from_settings(settings)
    sender = HttpCallbackSender(policy, timeout_s=settings.callback_timeout_s)
    stack.push_async_callback(sender.close)
    notifier = build_notifier(
        settings,
        flows=CallFlowRepository(factory),
        sessions=SessionRepository(factory),
        references=SafeReferenceSource(policy, max_references=10),
        sender=sender,
        outbox=SqlOutbox(factory),
    )
    await notifier.start()
    stack.push_async_callback(notifier.stop)


async def _call_flow(database_url: str, controller: Controller) -> CallFlowRecord:
    """A video call whose liveness session is in progress and past its deadline."""
    engine = create_engine(database_url)
    try:
        factory = session_factory(engine)
        now = datetime.now(UTC)
        session, _ = await SessionRepository(factory).create(
            "static",
            client_request_token=None,
            settings=SessionSettingsDocument(),
            expires_at=now + timedelta(minutes=5),
            kind="call",
        )
        await SessionRepository(factory).update_status(
            session.id, expected_version=session.version, status=SessionStatus.IN_PROGRESS
        )
        async with factory.begin() as transaction:
            await transaction.execute(
                update(SessionRow)
                .where(SessionRow.id == session.id)
                .values(expires_at=now - timedelta(seconds=1))
            )
        return await CallFlowRepository(factory).create(
            "static",
            session_id=session.id,
            ws_url="wss://room.example/protoo",
            callback_base_url=controller.url,
            datastore_base_url=controller.url,
            token=f"tok-{uuid4().hex[:8]}",
            language="en",
            settings=FlowSettingsDocument(),
            callback_secret=None,
            deadline=now + timedelta(minutes=5),
        )
    finally:
        await engine.dispose()


async def _until(what: Callable[[], Any], *, within_s: float = WAIT_S) -> None:
    async with asyncio.timeout(within_s):
        while not await what():  # noqa: ASYNC110 - polling what the services did
            await asyncio.sleep(0.1)


async def _unsent(database_url: str) -> list[OutboxRow]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.scalars(select(OutboxRow).where(OutboxRow.sent_at.is_(None)))).all())
    finally:
        await engine.dispose()


def _callbacks(controller: Controller, flow: CallFlowRecord) -> list[Any]:
    return [c for c in controller.callbacks if c.token == flow.token]


async def test_session_finished_waits_out_a_broker_cut_between_commit_and_publish(
    vhost: RabbitVhost, database_url: str, controller: Controller, rabbit_proxy: TcpProxy
) -> None:
    """The liveness side (a SessionLifecycle and its process's relay) and the notifier reach
    RabbitMQ through the proxy; the proxy is cut before the session ends."""
    settings = _settings(_rabbit_through(rabbit_proxy, vhost), database_url)
    flow = await _call_flow(database_url, controller)
    observer = Observer()
    async with AsyncExitStack() as stack:
        await observer.start(stack, vhost.url)
        await _start_notifier(stack, settings)
        engine = create_engine(database_url)
        stack.push_async_callback(engine.dispose)
        factory = session_factory(engine)
        broker = create_broker(settings)
        await broker.connect()
        stack.push_async_callback(broker.stop)
        await stack.enter_async_context(OutboxRelay.for_process(factory, broker, settings).running())

        rabbit_proxy.cut()  # the broker is gone: committed endings cannot be published
        ended = await SessionLifecycle(SessionRepository(factory)).end(flow.session_id, Expired())
        assert ended is not None and ended.status is SessionStatus.EXPIRED
        await asyncio.sleep(3.0)  # the relays try, and fail
        [waiting] = await _unsent(database_url)
        assert waiting.correlation_id == flow.session_id
        assert observer.finished(flow.session_id) == [] and _callbacks(controller, flow) == []

        rabbit_proxy.restore()

        async def called_back() -> bool:
            return bool(_callbacks(controller, flow))

        await _until(called_back)
        await asyncio.sleep(3.0)  # time for a (wrong) second event or callback

    [(message_id, event)] = observer.finished(flow.session_id)
    assert message_id == waiting.message_id and event["status"] == SessionStatus.EXPIRED.value
    assert [c.outcome for c in _callbacks(controller, flow)] == ["failure"]
    assert await _unsent(database_url) == []
    delivered = await _flow(database_url, flow.id)
    assert delivered.delivery is DeliveryStatus.DELIVERED and delivered.attempts == 1


async def test_session_finished_sent_twice_after_a_lost_mark_still_calls_back_once(
    vhost: RabbitVhost, database_url: str, controller: Controller, postgres_proxy: TcpProxy
) -> None:
    """The liveness side's relay reaches PostgreSQL through the proxy, cut right after the broker
    confirmed SessionFinished: the row stays unsent and is published again (the notifier's relay,
    or this one once the database is back), with the same message id; the notifier sees that the
    flow's outcome is taken and sends no second callback."""
    settings = _settings(vhost.url, database_url)
    flow = await _call_flow(database_url, controller)
    observer = Observer()
    async with AsyncExitStack() as stack:
        await observer.start(stack, vhost.url)
        engine = create_engine(_postgres_through(postgres_proxy, database_url))
        stack.push_async_callback(engine.dispose)
        factory = session_factory(engine)
        broker = create_broker(settings)
        await broker.connect()
        stack.push_async_callback(broker.stop)
        # the notifier's queues, so that SessionFinished waits there for the notifier started below
        await declare_topology(broker, NOTIFIER_ROUTES, delivery_limit=settings.delivery_limit)
        publisher = Publisher(broker)

        class CutAfterConfirm:
            """The process loses its database between the broker's confirm and the mark."""

            async def send(self, outgoing: Outgoing) -> None:
                await publisher.send(outgoing)
                if outgoing.correlation_id == flow.session_id and postgres_proxy_is_open:
                    cut.append(outgoing.message_id)
                    postgres_proxy.cut()

        cut: list[str] = []
        postgres_proxy_is_open = True
        ended = await SessionLifecycle(SessionRepository(factory)).end(flow.session_id, Expired())
        assert ended is not None
        relay = OutboxRelay(SqlOutbox(factory), CutAfterConfirm(), poll_s=0.1)
        await stack.enter_async_context(relay.running())

        async def published() -> bool:
            return bool(observer.finished(flow.session_id))

        await _until(published)
        postgres_proxy_is_open = False
        assert cut and [row.message_id for row in await _unsent(database_url)] == cut  # not marked
        await _start_notifier(stack, settings)  # its relay sends the row again; then its handler runs
        postgres_proxy.restore()

        async def sent_twice_and_called_back() -> bool:
            return len(observer.finished(flow.session_id)) >= 2 and bool(_callbacks(controller, flow))

        await _until(sent_twice_and_called_back)
        await asyncio.sleep(3.0)

    assert {message_id for message_id, _ in observer.finished(flow.session_id)} == set(cut)
    assert [c.outcome for c in _callbacks(controller, flow)] == ["failure"]
    assert await _unsent(database_url) == []


async def _flow(database_url: str, flow_id: str) -> CallFlowRecord:
    engine = create_engine(database_url)
    try:
        record = await CallFlowRepository(session_factory(engine)).fetch(flow_id)
    finally:
        await engine.dispose()
    assert record is not None
    return record
