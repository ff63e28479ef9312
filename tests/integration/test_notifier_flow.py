"""The notifier on real RabbitMQ (a throw-away vhost), PostgreSQL (a fresh, migrated database), a
local object store, the real matcher in-process and a real HTTP controller on 127.0.0.1 (the
example controller) that receives the PUTs. Each case asserts what the controller sees: exactly
one callback per flow, success or failure, and what GET /v1/calls/{id} reports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import aio_pika
import httpx
import pytest
from faststream.rabbit import RabbitBroker

import examples.controller
from contracts.documents import FlowSettingsDocument, SessionResult, SessionSettingsDocument
from contracts.events import CallFailed, ReferencesMatched, SessionFinished
from contracts.routing import MATCHER_REFERENCES, NOTIFIER_CALLBACKS, NOTIFIER_MATCHES, EventKey
from contracts.values import ModelInfo, SessionStatus
from domain.flows import DeliveryStatus, FlowStatus
from domain.records import CallFlowRecord
from examples.controller import Controller
from faces.packs import load_pack
from infra.broker import EVENTS, create_broker, declare_topology
from infra.db.audit import AuditAction, AuditLog
from infra.db.engine import create_engine, session_factory
from infra.db.flows import CallFlowRepository
from infra.db.outbox import SqlOutbox
from infra.db.repositories import SessionRepository
from infra.safe_fetch import FetchPolicy
from infra.settings import Settings
from infra.storage import ObjectStore, open_store
from services.matcher.adapters import OnnxFaceEngine, StoredImages
from services.matcher.main import build_app as build_matcher
from services.notifier.adapters import HttpCallbackSender, SafeReferenceSource
from services.notifier.main import Notifier, build_notifier
from services.notifier.outcome import client_callback_key
from tests.integration.conftest import migrate
from tests.paths import MODELS_DIR, PEOPLE, REPO_ROOT
from tests.support import services
from tests.support.broker import RabbitVhost, temporary_vhost

pytestmark = pytest.mark.integration

WAIT_S = 60.0
SECRET = "a-callback-secret-of-the-tests"


@dataclass
class Endpoint:
    """A controller's base URL (what a flow calls back), and what it sent."""

    url: str
    sent: list[int]


def docs_snippet() -> str:
    """The controller's verification snippet of docs/calls.md (the block after its marker)."""
    text = (REPO_ROOT / "docs" / "calls.md").read_text()
    return text.split("<!-- verify-callback -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def docs_verifier() -> Callable[..., bool]:
    namespace: dict[str, Any] = {}
    exec(compile(docs_snippet(), "docs/calls.md", "exec"), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


def data_url(path: Path) -> str:
    return f"data:image/jpeg;base64,{base64.b64encode(path.read_bytes()).decode()}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vhost() -> Iterator[RabbitVhost]:
    with temporary_vhost() as created:
        yield created


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    async with services.fresh_postgres_database() as url:
        await migrate(url)
        yield url


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ObjectStore:
    return open_store(tmp_path_factory.mktemp("objects").as_uri())


@pytest.fixture(scope="module")
async def matcher(vhost: RabbitVhost, store: ObjectStore) -> AsyncIterator[None]:
    """The real matcher (permissive pack, CPU) answering MatchReferences on the test vhost."""
    settings = Settings(broker_url=vhost.url, models_dir=MODELS_DIR, prefer_gpu=False, matcher_concurrency=1)
    pipeline = await asyncio.to_thread(
        load_pack, settings.model_pack, MODELS_DIR, prefer_gpu=False, threads=1
    )
    engine = OnnxFaceEngine(pipeline, max_pixels=40_000_000, workers=1, batch_size=4, batch_wait_s=0.002)
    broker = build_matcher(settings, engine=engine, images=StoredImages(store)).broker
    assert isinstance(broker, RabbitBroker)
    await broker.connect()
    await declare_topology(broker, (MATCHER_REFERENCES,), delivery_limit=3)
    await broker.start()
    yield
    await broker.stop()
    await engine.close()


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    server = Controller(tmp_path, quiet=True).start()
    yield server
    server.stop()


def settings_for(vhost: RabbitVhost, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "broker_url": vhost.url,
        "database_url": database_url,
        "fetch_allow_hosts": "127.0.0.1",
        "flow_sweep_s": 0.2,
        "callback_timeout_s": 3.0,
        "callback_backoff_s": 0.2,
        "callback_backoff_max_s": 0.5,
        "callback_retry_deadline_s": 60.0,
        "match_timeout_s": 60.0,
        "api_token": "t",
    }
    return Settings(**(values | overrides))


class Harness:
    """The test's side: the flow and session rows, a publisher, the dead-letter queue."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.engine = create_engine(settings.resolved_database_url)
        factory = session_factory(self.engine)
        self.sessions = SessionRepository(factory)
        self.flows = CallFlowRepository(factory)
        self.audit = AuditLog(factory)
        self.broker = create_broker(settings)
        self.sender = HttpCallbackSender(
            FetchPolicy.from_settings(settings), timeout_s=settings.callback_timeout_s
        )
        self.notifier: Notifier = build_notifier(
            settings,
            flows=self.flows,
            sessions=self.sessions,
            references=SafeReferenceSource(FetchPolicy.from_settings(settings), max_references=10),
            sender=self.sender,
            outbox=SqlOutbox(factory),
            audit=self.audit,
        )

    async def start(self) -> None:
        await self.broker.connect()
        await self.notifier.start()

    async def stop(self) -> None:
        await self.notifier.stop()
        await self.sender.close()
        await self.broker.stop()
        await self.engine.dispose()

    async def flow(
        self,
        controller: Controller | Endpoint,
        *,
        status: SessionStatus = SessionStatus.IN_PROGRESS,
        result: dict[str, Any] | None = None,
        deadline_s: float = 300,
        secret: str | None = None,
        owner: str = "static",
        token: str | None = None,
    ) -> CallFlowRecord:
        now = datetime.now(UTC)
        session, _ = await self.sessions.create(
            owner,
            client_request_token=None,
            settings=SessionSettingsDocument(),
            expires_at=now + timedelta(minutes=5),
            kind="call",
        )
        if status is not SessionStatus.CREATED:
            session = await self.sessions.update_status(
                session.id,
                expected_version=session.version,
                status=status,
                result=None if result is None else SessionResult.from_row(result),  # a legacy row
            )
        return await self.flows.create(
            owner,
            session_id=session.id,
            ws_url="wss://room.example/protoo",
            callback_base_url=controller.url,
            datastore_base_url=controller.url,
            token=token or f"tok/{uuid4().hex[:8]} x",  # path characters: escaped in every URL
            language="en",
            settings=FlowSettingsDocument(),
            callback_secret=secret,
            deadline=now + timedelta(seconds=deadline_s),
        )

    async def live_session(
        self, controller: Controller | Endpoint, probe: Path, *, owner: str = "static"
    ) -> CallFlowRecord:
        """A flow whose session SUCCEEDED, its best live frame in storage."""
        key = f"sessions/{uuid4()}/reference.jpg"
        await self.store.put(key, await asyncio.to_thread(probe.read_bytes), "image/jpeg")
        result = {"isLive": True, "confidence": 97.0, "reasons": [], "referenceImageKey": key}
        return await self.flow(controller, status=SessionStatus.SUCCEEDED, result=result, owner=owner)

    async def publish(self, event: SessionFinished | CallFailed, key: str) -> None:
        await self.broker.publish(event, exchange=EVENTS, routing_key=key, persist=True)

    async def publish_answer(self, answer: ReferencesMatched) -> None:
        """On the events exchange, and straight into the notifier's queue (as a reply_to would)."""
        await self.broker.publish(answer, exchange=EVENTS, routing_key=EventKey.REFERENCES_MATCHED)
        await self.broker.publish(answer, routing_key=NOTIFIER_MATCHES.queue)

    async def finished(self, flow: CallFlowRecord, status: SessionStatus, *reasons: str) -> None:
        event = SessionFinished(
            correlation_id=flow.session_id, session_id=flow.session_id, status=status, reasons=list(reasons)
        )
        await self.publish(event, EventKey.SESSION_FINISHED)

    async def wait_for(self, what: Callable[[], Any]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not await what():  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.1)

    async def delivery_ended(self, flow: CallFlowRecord) -> CallFlowRecord:
        async def ended() -> bool:
            current = await self.flows.fetch(flow.id)
            return current is not None and current.delivery in (
                DeliveryStatus.DELIVERED,
                DeliveryStatus.FAILED,
            )

        await self.wait_for(ended)
        current = await self.flows.fetch(flow.id)
        assert current is not None
        return current

    async def dead_letters(self) -> list[dict[str, Any]]:
        connection = await aio_pika.connect(self.settings.broker_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(NOTIFIER_CALLBACKS.dead_letter_queue, ensure=True)
            # read without acknowledging: they go back to the queue when the channel closes
            bodies: list[dict[str, Any]] = []
            while len(bodies) < 100 and (message := await queue.get(no_ack=False, fail=False)) is not None:
                bodies.append(json.loads(message.body))
            return bodies


@pytest.fixture
async def make_harness(
    vhost: RabbitVhost, database_url: str, store: ObjectStore
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Harness] = []

    async def make(**overrides: Any) -> Harness:
        harness = Harness(settings_for(vhost, database_url, **overrides), store)
        await harness.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.stop()


def callbacks_for(controller: Controller, flow: CallFlowRecord) -> list[Any]:
    return [c for c in controller.callbacks if c.token == flow.token]


async def settle() -> None:
    """Give duplicate or late messages time to (wrongly) produce a second callback."""
    await asyncio.sleep(1.5)


# --------------------------------------------------------------------------- cases


async def test_live_and_matching_reference_calls_success_once(
    make_harness: Callable[..., Any], controller: Controller, matcher: None
) -> None:
    harness: Harness = await make_harness(callback_secret=SECRET)
    (controller.images / "biden.jpg").write_bytes((PEOPLE / "biden.jpg").read_bytes())
    controller.items = [data_url(PEOPLE / "obama2.jpg"), f"{controller.url}/images/biden.jpg"]
    controller.secret = client_callback_key(
        SECRET, "static"
    )  # what `faceproof keys callback-key static` prints
    flow = await harness.live_session(controller, PEOPLE / "obama.jpg")

    await harness.finished(flow, SessionStatus.SUCCEEDED)
    ended = await harness.delivery_ended(flow)
    await harness.finished(flow, SessionStatus.SUCCEEDED)  # a duplicate: no second match or callback
    await settle()

    received = callbacks_for(controller, flow)
    assert [c.outcome for c in received] == ["success"]
    assert received[0].signature_valid is True
    result = received[0].result
    assert result["flowId"] == flow.id and result["isLive"] is True and result["reasons"] == []
    assert result["similarity"] > 0.6
    assert ended.status is FlowStatus.SUCCEEDED and ended.delivery is DeliveryStatus.DELIVERED
    assert ended.decision is not None and ended.decision.references_used == 2
    [audited] = await harness.audit.list(subject_id=flow.id, action=AuditAction.CALL_DECIDED)
    assert (audited.actor, audited.outcome) == ("static", "SUCCEEDED")
    assert audited.details is not None and audited.details["match"] is True
    assert audited.details["sessionId"] == flow.session_id and audited.details["reasons"] == []


async def test_a_flow_of_another_client_cannot_produce_a_callback_this_controller_accepts(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    """The attack: another API client starts a flow with this controller's token and callback URL
    (its own room, its own reference list elsewhere) to get faceproof to sign an outcome for that
    token. Signed with one deployment-wide key, it verified at this controller; each client's key
    is its own now, so the controller refuses it (401, not retried) and accepts its own flow's."""
    harness: Harness = await make_harness(callback_secret=SECRET)
    controller.secret = client_callback_key(SECRET, "static")
    intruder = await harness.flow(
        controller, owner="intruder", status=SessionStatus.FAILED, token="tok-victim"
    )
    await harness.finished(intruder, SessionStatus.FAILED, "NO_FACE")
    forged = await harness.delivery_ended(intruder)
    own = await harness.flow(controller, status=SessionStatus.FAILED, token="tok-victim")
    await harness.finished(own, SessionStatus.FAILED, "NO_FACE")
    delivered = await harness.delivery_ended(own)

    assert [(c.outcome, c.signature_valid) for c in controller.refused] == [("failure", False)]
    assert forged.delivery is DeliveryStatus.FAILED and forged.status_code == 401
    accepted = [c for c in controller.callbacks if c.signature_valid]
    assert [c.result["flowId"] for c in accepted] == [own.id]
    assert delivered.delivery is DeliveryStatus.DELIVERED


async def test_a_different_person_calls_failure(
    make_harness: Callable[..., Any], controller: Controller, matcher: None
) -> None:
    harness: Harness = await make_harness()
    controller.items = [data_url(PEOPLE / "biden.jpg")]
    flow = await harness.live_session(controller, PEOPLE / "obama.jpg")

    await harness.finished(flow, SessionStatus.SUCCEEDED)
    ended = await harness.delivery_ended(flow)
    await settle()

    received = callbacks_for(controller, flow)
    assert [c.outcome for c in received] == ["failure"]
    assert received[0].body == b""  # no secret: the seed's empty body
    assert ended.status is FlowStatus.FAILED
    assert ended.decision is not None and "FACE_MISMATCH" in ended.decision.reasons
    assert ended.decision.match is False


async def test_answers_the_notifier_did_not_ask_for_change_nothing(
    database_url: str, store: ObjectStore, controller: Controller
) -> None:
    """The attack: a forged match for a flow waiting for the matcher, sent the way a reply_to
    answer would arrive (straight into the notifier's queue) and on the events exchange: another
    request id, another client. Only the answer to the flow's own request counts. (A vhost of its
    own: no matcher answers there, so the flow waits.)"""
    with temporary_vhost() as own:
        harness = Harness(settings_for(own, database_url), store)
        await harness.start()
        try:
            await _only_the_answer_to_its_request_counts(harness, controller)
        finally:
            await harness.stop()


async def _only_the_answer_to_its_request_counts(harness: Harness, controller: Controller) -> None:
    controller.items = [data_url(PEOPLE / "biden.jpg")]
    flow = await harness.live_session(controller, PEOPLE / "obama.jpg")
    await harness.finished(flow, SessionStatus.SUCCEEDED)

    async def matching() -> bool:  # its references fetched and sent to the matcher
        current = await harness.flows.fetch(flow.id)
        return current is not None and current.match_request_id is not None

    await harness.wait_for(matching)
    waiting = await harness.flows.fetch(flow.id)
    assert waiting is not None and waiting.match_request_id
    model = ModelInfo(pack="forged", licence="-", commercial_use=True)
    own = {
        "correlation_id": flow.id,
        "flow_id": flow.id,
        "request_id": waiting.match_request_id,
        "client_id": flow.owner,
    }
    for values in ({**own, "request_id": "forged"}, {**own, "client_id": "another-client"}):
        forged = ReferencesMatched(**values, similarity=0.99, match=True, model=model)
        await harness.publish_answer(forged)
    await settle()
    current = await harness.flows.fetch(flow.id)
    assert current is not None and current.outcome is None, current.decision
    assert current.status is FlowStatus.MATCHING and callbacks_for(controller, flow) == []

    await harness.publish_answer(ReferencesMatched(**own, similarity=0.2, match=False, model=model))
    ended = await harness.delivery_ended(flow)
    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]
    assert ended.decision is not None and ended.decision.match is False


async def test_references_that_cannot_be_fetched_call_failure(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    harness: Harness = await make_harness()
    # A missing Data Store id, a refused address (link-local metadata), an image that is none.
    controller.items = ["no-such-id", "http://169.254.169.254/latest", "data:image/jpeg;base64,AAAA"]
    flow = await harness.live_session(controller, PEOPLE / "obama.jpg")

    await harness.finished(flow, SessionStatus.SUCCEEDED)
    ended = await harness.delivery_ended(flow)

    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]
    assert ended.decision is not None and "REFERENCES_UNAVAILABLE" in ended.decision.reasons


async def test_duplicate_session_finished_still_one_callback(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    harness: Harness = await make_harness()
    flow = await harness.flow(
        controller, status=SessionStatus.FAILED, result={"isLive": False, "reasons": ["X"]}
    )
    for _ in range(3):
        await harness.finished(flow, SessionStatus.FAILED, "CHALLENGE_FAILED")
    ended = await harness.delivery_ended(flow)
    await harness.finished(flow, SessionStatus.FAILED, "CHALLENGE_FAILED")
    await settle()

    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]
    assert ended.attempts == 1
    assert ended.decision is not None and "CHALLENGE_FAILED" in ended.decision.reasons
    audited = await harness.audit.list(subject_id=flow.id)  # one record for four events
    assert [(a.action, a.outcome) for a in audited] == [("CALL_DECIDED", "FAILED")]
    assert audited[0].details is not None and "CHALLENGE_FAILED" in audited[0].details["reasons"]


async def test_call_failed_calls_failure_signed(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    harness: Harness = await make_harness()
    controller.secret = SECRET
    flow = await harness.flow(controller, secret=SECRET)  # the flow's own secret (from /v1/calls)

    event = CallFailed(
        correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="ROOM_UNREACHABLE"
    )
    await harness.publish(event, EventKey.CALL_FAILED)
    await harness.delivery_ended(flow)

    (received,) = callbacks_for(controller, flow)
    assert received.outcome == "failure"
    assert received.signature_valid is True  # the example controller's verify
    header = received.headers["X-Faceproof-Signature"]
    verify = docs_verifier()  # the snippet of docs/calls.md, run as a controller would
    path = f"/failure/{quote(flow.token, safe='')}"
    assert verify(SECRET, "PUT", path, received.body, header)
    assert not verify("another-secret-entirely", "PUT", path, received.body, header)
    assert received.result["reasons"] == ["ROOM_UNREACHABLE"]


def test_the_docs_snippet_is_the_example_controllers_verify() -> None:
    """One verifier: docs/calls.md shows examples/controller.py's ``verify`` verbatim."""
    assert inspect.getsource(examples.controller.verify) in docs_snippet()


async def test_a_captured_failure_callback_replayed_to_success_is_refused(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    """The attack: a controller's failure callback is captured on the way (a proxy's log, a
    compromised hop) and its body and signature are replayed to /success of the same token, and to
    another flow's token. The signature covers the method and path, so the documented verifier and
    the example controller refuse both; the controller keeps the one real outcome."""
    harness: Harness = await make_harness()
    controller.secret = SECRET
    flow = await harness.flow(controller, secret=SECRET)
    other = await harness.flow(controller, secret=SECRET)
    event = CallFailed(correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="NO_VIDEO")
    await harness.publish(event, EventKey.CALL_FAILED)
    await harness.delivery_ended(flow)
    (captured,) = callbacks_for(controller, flow)
    assert captured.outcome == "failure" and captured.signature_valid is True
    header = captured.headers["X-Faceproof-Signature"]

    success = f"/success/{quote(flow.token, safe='')}"
    elsewhere = f"/success/{quote(other.token, safe='')}"
    verify = docs_verifier()
    assert not verify(SECRET, "PUT", success, captured.body, header)
    assert not verify(SECRET, "PUT", elsewhere, captured.body, header)
    replay = {"Content-Type": "application/json", "X-Faceproof-Signature": header}
    async with httpx.AsyncClient(base_url=controller.url) as http:
        answers = [
            (await http.put(path, content=captured.body, headers=replay)).status_code
            for path in (success, elsewhere)
        ]
    assert answers == [401, 401]
    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]  # no success recorded
    assert callbacks_for(controller, other) == []
    assert [(c.outcome, c.token) for c in controller.refused] == [
        ("success", flow.token),
        ("success", other.token),
    ]


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a free local port, one thread per request: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def endless_controller() -> Iterator[Endpoint]:
    """A controller that takes every callback (200), then streams an answer that never ends."""
    sent: list[int] = []

    class Endless(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            with contextlib.suppress(OSError):  # until the notifier hangs up
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent.append(len(chunk))

    with serving(Endless) as url:
        yield Endpoint(url, sent)


async def test_an_endless_answer_to_a_callback_does_not_hold_the_notifier(
    make_harness: Callable[..., Any], endless_controller: Endpoint
) -> None:
    """The attack: the controller answers 200 and then streams forever, to hold the notifier's
    connection (and memory). At most 64 KiB of the answer is read: delivered on the first
    attempt, well within the callback time limit."""
    harness: Harness = await make_harness(callback_timeout_s=5.0)
    flow = await harness.flow(endless_controller)
    started = time.monotonic()
    event = CallFailed(correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="NO_VIDEO")
    await harness.publish(event, EventKey.CALL_FAILED)
    ended = await harness.delivery_ended(flow)
    assert time.monotonic() - started < 5.0
    assert ended.delivery is DeliveryStatus.DELIVERED and ended.attempts == 1 and ended.status_code == 200


@pytest.fixture
def silent_controller() -> Iterator[Endpoint]:
    """A controller that reads each callback (and each request for its reference list) and never
    answers (until the test ends)."""
    received: list[int] = []
    ended = threading.Event()

    class Silent(QuietHandler):
        def do_PUT(self) -> None:
            received.append(len(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            ended.wait()

        def do_GET(self) -> None:
            received.append(0)
            ended.wait()

    with serving(Silent) as url:
        yield Endpoint(url, received)
        ended.set()


async def reached(endpoint: Endpoint) -> None:
    """Until the notifier's first request is at ``endpoint``, and half a second more (for the rest
    of what was published to reach the notifier)."""
    async with asyncio.timeout(WAIT_S):
        while not endpoint.sent:  # noqa: ASYNC110 - the server's thread appends to it
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


async def test_a_client_whose_controller_never_answers_does_not_hold_up_another_clients_callback(
    make_harness: Callable[..., Any], controller: Controller, silent_controller: Endpoint
) -> None:
    """The attack: client A ends six flows at once; its controller takes each callback and never
    answers, so every attempt lasts the whole time limit (6 s). Before, A's attempts filled the
    notifier's four places and client B's callback waited behind them (6 s and more); now A runs
    at most its share (FACEPROOF_CALLBACKS_PER_CLIENT, 2), the rest of A's is put off, and B's
    goes out at once."""
    harness: Harness = await make_harness(callback_timeout_s=6.0)
    slow = [await harness.flow(silent_controller, owner="client-a") for _ in range(6)]
    fast = await harness.flow(controller, owner="client-b")
    for flow in slow:
        event = CallFailed(correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="X")
        await harness.publish(event, EventKey.CALL_FAILED)
    await reached(silent_controller)

    started = time.monotonic()
    event = CallFailed(correlation_id=fast.id, flow_id=fast.id, session_id=fast.session_id, reason="X")
    await harness.publish(event, EventKey.CALL_FAILED)
    ended = await harness.delivery_ended(fast)

    assert time.monotonic() - started < 3.0
    assert ended.delivery is DeliveryStatus.DELIVERED
    assert [c.outcome for c in callbacks_for(controller, fast)] == ["failure"]
    assert len(silent_controller.sent) <= 2  # A's share, not the notifier


async def test_a_client_whose_reference_list_never_answers_does_not_hold_up_another_clients_decision(
    make_harness: Callable[..., Any], controller: Controller, silent_controller: Endpoint, matcher: None
) -> None:
    """The attack: client A ends six live flows at once; its controller takes each request for the
    reference list and never answers, so every fetch lasts the whole time limit (8 s). Before, A's
    fetches filled the notifier's four places in the SessionFinished consumer and client B's flow
    waited behind them for its decision (8 s and more); now the fetch is a command of its own, A
    runs at most its share (FACEPROOF_REFERENCE_FETCHES_PER_CLIENT, 2), the rest of A's is put
    off, and B's flow is matched and called back at once."""
    harness: Harness = await make_harness(fetch_timeout_s=8.0)
    slow = [
        await harness.live_session(silent_controller, PEOPLE / "obama.jpg", owner="client-a")
        for _ in range(6)
    ]
    controller.items = [data_url(PEOPLE / "obama2.jpg")]
    fast = await harness.live_session(controller, PEOPLE / "obama.jpg", owner="client-b")
    for flow in slow:
        await harness.finished(flow, SessionStatus.SUCCEEDED)
    await reached(silent_controller)

    started = time.monotonic()
    await harness.finished(fast, SessionStatus.SUCCEEDED)
    ended = await harness.delivery_ended(fast)

    assert time.monotonic() - started < 4.0
    assert ended.delivery is DeliveryStatus.DELIVERED and ended.status is FlowStatus.SUCCEEDED
    assert [c.outcome for c in callbacks_for(controller, fast)] == ["success"]
    assert len(silent_controller.sent) <= 2  # A's share, not the notifier


async def test_5xx_is_retried_then_delivered_once(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    harness: Harness = await make_harness()
    controller.put_statuses = [500, 503]
    flow = await harness.flow(controller)

    event = CallFailed(correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="NO_VIDEO")
    await harness.publish(event, EventKey.CALL_FAILED)
    ended = await harness.delivery_ended(flow)
    await settle()

    assert ended.delivery is DeliveryStatus.DELIVERED
    assert ended.attempts == 3 and ended.status_code == 200
    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]


async def test_controller_down_retries_until_the_deadline_then_dead_letters(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    harness: Harness = await make_harness(callback_retry_deadline_s=2.0, callback_timeout_s=1.0)
    flow = await harness.flow(controller)
    controller.stop()  # nothing listens on its port any more

    event = CallFailed(correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="NO_VIDEO")
    await harness.publish(event, EventKey.CALL_FAILED)
    ended = await harness.delivery_ended(flow)

    assert ended.delivery is DeliveryStatus.FAILED
    assert ended.attempts >= 2  # retried before giving up
    assert ended.last_error is not None and "retries exhausted" in ended.last_error
    assert flow.token not in ended.last_error

    async def letters_of_flow() -> list[dict[str, Any]]:
        return [letter for letter in await harness.dead_letters() if letter.get("flow_id") == flow.id]

    await harness.wait_for(letters_of_flow)  # the outbox relay publishes it after the commit
    await settle()
    letters = await letters_of_flow()
    assert len(letters) == 1 and letters[0]["outcome"] == "FAILURE"


async def test_a_flow_past_its_deadline_fails_from_the_sweeper(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    harness: Harness = await make_harness()
    flow = await harness.flow(controller, status=SessionStatus.CREATED, deadline_s=-1)  # no video ever came

    ended = await harness.delivery_ended(flow)
    await settle()

    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]
    assert ended.decision is not None and ended.decision.reasons == ["NO_VIDEO", "FLOW_TIMEOUT"]


async def test_a_retry_survives_a_notifier_restart(
    make_harness: Callable[..., Any], controller: Controller
) -> None:
    # The first notifier fails attempt 1 and schedules attempt 2 in the database, then stops; a
    # new notifier (another process, in production) sends it.
    first: Harness = await make_harness(callback_backoff_s=3.0, callback_backoff_max_s=3.0)
    controller.put_statuses = [502]
    flow = await first.flow(controller)
    event = CallFailed(correlation_id=flow.id, flow_id=flow.id, session_id=flow.session_id, reason="NO_VIDEO")
    await first.publish(event, EventKey.CALL_FAILED)

    async def first_attempt_failed() -> bool:
        current = await first.flows.fetch(flow.id)
        return current is not None and current.attempts == 1 and current.last_error == "HTTP 502"

    await first.wait_for(first_attempt_failed)
    await first.notifier.stop()

    second: Harness = await make_harness()
    ended = await second.delivery_ended(flow)
    assert ended.delivery is DeliveryStatus.DELIVERED and ended.attempts == 2
    assert [c.outcome for c in callbacks_for(controller, flow)] == ["failure"]
