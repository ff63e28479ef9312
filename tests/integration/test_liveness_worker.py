"""The liveness worker on real RabbitMQ (a throw-away vhost), PostgreSQL (a fresh, migrated
database), a local object store and the real models: two workers in-process, frames of a real
video delivered out of order, expiry with and without running workers, a printed photo.

Challenges: the test writes the ``liveness_states`` row itself (as the worker would after
drawing) with challenges the material answers: ``liveportrait_d3.mp4`` from 1.0 s looks down
(the annotated LOOK_DOWN segment, 1.9-4.77 s) and then up (LOOK_UP, 5.2-6.9 s).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import cv2
import numpy as np
import pytest
from sqlalchemy import func, select, update

from contracts.commands import ExpireSession
from contracts.documents import ChallengeResult, SessionSettingsDocument, StoredChallenge
from contracts.events import FrameCaptured, ReferencesMatched, SessionStarted
from contracts.routing import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, CommandKey, EventKey
from contracts.values import ChallengeType, ModelInfo
from domain.limits import Limits
from faceproof.testing.scripted_subject import Media, fit_frame
from faces.alignment import align_face
from infra.broker import COMMANDS, EVENTS, create_broker
from infra.db.engine import create_engine, session_factory
from infra.db.ingress import CommandStatus, ProcessedCommands
from infra.db.liveness import LivenessRepository
from infra.db.repositories import SessionRepository
from infra.db.security import RateLimitRepository
from infra.db.tables import LivenessFrameRow, ProcessedCommandRow, RateBucketRow
from infra.settings import Settings
from infra.storage import ObjectStore, open_store
from services.liveness.analysis import FrameAnalyzer
from services.liveness.challenges import Challenge
from services.liveness.decision import IdentityCheck
from services.liveness.frames import IDENTITY_EVERY_FRAMES, SPOOF_EVERY_FRAMES
from services.liveness.handlers import to_replay_frame
from services.liveness.main import LivenessWorker, load_models
from services.liveness.readiness import DEFAULT_READINESS
from services.liveness.replay import GAP_SKIP_AFTER, ReplayFrame, replay
from services.liveness.session_models import SessionModels
from tests.integration.conftest import migrate
from tests.paths import DATA_DIR, MODELS_DIR, PEOPLE
from tests.support import services
from tests.support.broker import RabbitVhost, temporary_vhost

pytestmark = pytest.mark.integration

WAIT_S = 60.0
VIDEO = DATA_DIR / "video" / "liveportrait_d3.mp4"
VIDEO_START_S = 1.0
VIDEO_FRAMES = 48
ANSWERABLE = [Challenge(ChallengeType.LOOK_DOWN), Challenge(ChallengeType.LOOK_UP)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models() -> SessionModels:
    return load_models(Settings(models_dir=MODELS_DIR, prefer_gpu=False, liveness_concurrency=1))


@pytest.fixture(scope="module")
def vhost() -> Any:
    with temporary_vhost() as created:
        yield created


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    services.require_url(services.postgres_url(), "PostgreSQL", 5432)
    async with services.fresh_postgres_database() as url:
        await migrate(url)
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str, vhost: RabbitVhost) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        broker_url=vhost.url,
        models_dir=MODELS_DIR,
        prefer_gpu=False,
        liveness_concurrency=1,
        expiry_sweep_s=0.5,
        match_timeout_s=30.0,
        api_token=None,
    )


class Harness:
    """The test's side: database, store, a publisher and an observer of events and commands."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.engine = create_engine(settings.resolved_database_url)
        factory = session_factory(self.engine)
        self.sessions = SessionRepository(factory)
        self.states = LivenessRepository(factory)
        self.factory = factory
        self.broker = create_broker(settings)
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        await self.broker.connect()
        self._connection = await aio_pika.connect_robust(self.settings.broker_url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for name, key in ((EVENTS_EXCHANGE, "#"), (COMMANDS_EXCHANGE, CommandKey.MATCH_REFERENCES)):
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            await queue.bind(exchange, routing_key=key)

        async def record(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.seen.append((message.routing_key or "", json.loads(message.body)))

        await queue.consume(record)

    async def stop(self) -> None:
        await self.broker.stop()
        if self._connection is not None:
            await self._connection.close()
        await self.engine.dispose()

    def events(self, key: str, session_id: str) -> list[dict[str, Any]]:
        return [body for k, body in self.seen if k == key and body.get("correlation_id") == session_id]

    async def wait_for(self, what: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not what():  # noqa: ASYNC110 - the observer's list fills from another task
                await asyncio.sleep(0.1)

    async def finished(self, session_id: str) -> dict[str, Any]:
        await self.wait_for(lambda: bool(self.events(EventKey.SESSION_FINISHED, session_id)))
        return self.events(EventKey.SESSION_FINISHED, session_id)[0]

    async def new_session(
        self, *, expires_in_s: float = 180.0, reference_key: str | None = None, audit_images: int = 2
    ) -> str:
        record, _ = await self.sessions.create(
            "test",
            client_request_token=None,
            settings=SessionSettingsDocument(challenges=2, audit_images=audit_images),
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s),
            reference_key=reference_key,
        )
        return record.id

    async def start_session(self, session_id: str, challenges: list[Challenge], started_at: datetime) -> None:
        await self.states.create_state(
            session_id,
            challenges=[StoredChallenge(type=c.type, target=c.target) for c in challenges],
            started_at=started_at,
            connection_id="c1",
        )
        event = SessionStarted(
            correlation_id=session_id, session_id=session_id, connection_id="c1", occurred_at=started_at
        )
        await self.broker.publish(event, exchange=EVENTS, routing_key=EventKey.SESSION_STARTED, persist=True)

    async def put_frames(self, session_id: str, images: list[bytes]) -> list[str]:
        keys = []
        for sequence, data in enumerate(images):
            key = f"sessions/{session_id}/frames/{sequence:08d}.jpg"
            await self.store.put(key, data, "image/jpeg")
            keys.append(key)
        return keys

    async def publish_frame(self, session_id: str, sequence: int, key: str, captured_at: datetime) -> None:
        event = FrameCaptured(
            correlation_id=session_id,
            session_id=session_id,
            connection_id="c1",
            sequence=sequence,
            storage_key=key,
            width=640,
            height=480,
            captured_at=captured_at,
        )
        await self.broker.publish(event, exchange=EVENTS, routing_key=EventKey.FRAME_CAPTURED, persist=True)

    async def stored_frames(self, session_id: str) -> int:
        async with self.factory() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(LivenessFrameRow)
                .where(LivenessFrameRow.session_id == session_id)
            )
        return int(count or 0)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    store = open_store(settings.resolved_storage_url)
    await store.ensure_buckets()
    created = Harness(settings, store)
    await created.start()
    yield created
    await created.stop()


@pytest.fixture
async def workers(
    settings: Settings, models: SessionModels, harness: Harness
) -> AsyncIterator[list[LivenessWorker]]:
    started = [LivenessWorker(settings, models=models, store=harness.store) for _ in range(2)]
    for worker in started:
        await worker.start()
    yield started
    for worker in started:
        await worker.stop()


def jpeg(image: np.ndarray[Any, np.dtype[np.uint8]]) -> bytes:
    ok, data = cv2.imencode(".jpg", fit_frame(image), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(data)


def video_jpegs() -> list[bytes]:
    media = Media.from_path(VIDEO, max_seconds=VIDEO_START_S + VIDEO_FRAMES / 8)
    first = round(VIDEO_START_S * 8)
    return [jpeg(frame) for frame in media.frames[first : first + VIDEO_FRAMES]]


def in_order(images: list[bytes], models: SessionModels) -> list[ReplayFrame]:
    """What the frames give analysed in order by one analyzer (tracking), like run_session."""
    m = models.analyzer
    analyzer = FrameAnalyzer(m.detector, m.mesh, eyes=m.eyes, antispoof=m.antispoof)
    gate = IdentityCheck(models.identity_threshold)
    frames = []
    for sequence, data in enumerate(images):
        image = np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), dtype=np.uint8)
        analysis = analyzer.analyze(image)
        spoof = None
        if sequence % SPOOF_EVERY_FRAMES == 0 and analysis.box is not None:
            spoof = m.spoof_score(image, analysis.box)
        embedding = None
        if sequence % IDENTITY_EVERY_FRAMES == 0 and gate.wants(analysis):
            assert analysis.keypoints is not None
            embedding = models.embedder.embed([align_face(image, analysis.keypoints)])[0]
        frames.append(ReplayFrame(sequence, sequence / 8, analysis, "", spoof, embedding))
    return frames


# --------------------------------------------------------------------------- tests


async def test_shuffled_frames_on_two_workers_give_the_in_order_verdicts(
    harness: Harness, workers: list[LivenessWorker], models: SessionModels
) -> None:
    images = await asyncio.to_thread(video_jpegs)
    session_id = await harness.new_session(audit_images=3)
    keys = await harness.put_frames(session_id, images)
    started_at = datetime.now(UTC)
    await harness.start_session(session_id, ANSWERABLE, started_at)

    # Out of order within windows of GAP_SKIP_AFTER + 1 frames: a frame overtaken by more
    # frames than that counts as lost (docs/liveness.md), so each window is published once the
    # previous one is stored.
    rng = random.Random(7)
    order = list(range(len(images)))
    published = 0
    for start in range(0, len(order), GAP_SKIP_AFTER + 1):
        window = order[start : start + GAP_SKIP_AFTER + 1]
        rng.shuffle(window)
        for sequence in window:
            await harness.publish_frame(
                session_id, sequence, keys[sequence], started_at + timedelta(seconds=sequence / 8)
            )
        published += len(window)

        async def caught_up(count: int = published) -> bool:
            state = await harness.states.get(session_id)
            return (state is not None and state.decision is not None) or (
                await harness.stored_frames(session_id) >= count
            )

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not await caught_up():
            assert asyncio.get_running_loop().time() < deadline, "frames were not stored in time"
            await asyncio.sleep(0.1)
        state = await harness.states.get(session_id)
        if state is not None and state.decision is not None:
            break

    finished = await harness.finished(session_id)
    assert finished["status"] == "SUCCEEDED"

    verdicts = harness.events(EventKey.CHALLENGE_VERDICT, session_id)
    issued = harness.events(EventKey.CHALLENGE_ISSUED, session_id)
    assert [(v["index"], v["challenge"], v["passed"]) for v in verdicts] == [
        (0, "LOOK_DOWN", True),
        (1, "LOOK_UP", True),
    ]
    assert [(i["index"], i["challenge"]) for i in issued] == [(0, "LOOK_DOWN"), (1, "LOOK_UP")]

    # the same as a direct replay of the stored frames, in order ...
    state = await harness.states.get(session_id)
    assert state is not None
    stored = [to_replay_frame(f, state.started_at) for f in await harness.states.frames_from(session_id, 0)]
    direct = replay(
        ANSWERABLE, stored, identity_threshold=models.identity_threshold, readiness=DEFAULT_READINESS
    )
    assert [(n, v.status.value == "PASSED", v.reason) for n, v in enumerate(direct.verdicts)] == [
        (v["index"], v["passed"], v["reason"]) for v in verdicts
    ]
    # ... and as the frames analysed in order by one analyzer
    offline = replay(
        ANSWERABLE,
        await asyncio.to_thread(in_order, images, models),
        identity_threshold=0.35,
        readiness=DEFAULT_READINESS,
    )
    assert [(v.status, v.reason) for v in offline.verdicts] == [(v.status, v.reason) for v in direct.verdicts]
    assert offline.decision is not None and offline.decision.is_live

    record = await harness.sessions.fetch(session_id)
    assert record is not None and record.status.value == "SUCCEEDED" and record.result is not None
    result = record.result.to_row()  # the stored document: one spelling, versioned
    assert set(result) == {
        "version",
        "is_live",
        "confidence",
        "reasons",
        "reference_image_key",
        "audit_image_keys",
        "comparison_result",
        "comparison_match",
        "challenges",
    }
    assert result["is_live"] is True and result["confidence"] >= 50 and result["reasons"] == []
    assert result["challenges"] == [
        {"type": "LOOK_DOWN", "status": "PASSED", "reason": None},
        {"type": "LOOK_UP", "status": "PASSED", "reason": None},
    ]
    assert result["comparison_result"] is None and result["comparison_match"] is None
    assert result["reference_image_key"] == f"sessions/{session_id}/reference.jpg"
    assert result["audit_image_keys"] == [f"sessions/{session_id}/audit-{i}.jpg" for i in range(3)]
    for key in [result["reference_image_key"], *result["audit_image_keys"]]:
        assert (await harness.store.get(key))[:2] == b"\xff\xd8"
    decided = harness.events(EventKey.LIVENESS_DECIDED, session_id)
    assert len(decided) == 1 and decided[0]["is_live"] is True

    await asyncio.sleep(1.5)  # two sweeps later: still exactly one of each
    assert len(harness.events(EventKey.SESSION_FINISHED, session_id)) == 1
    assert len(harness.events(EventKey.CHALLENGE_VERDICT, session_id)) == 2


async def test_a_session_nobody_joins_expires_once(harness: Harness, workers: list[LivenessWorker]) -> None:
    swept = await harness.new_session(expires_in_s=1.0)
    commanded = await harness.new_session(expires_in_s=0.5)
    await asyncio.sleep(0.6)
    command = ExpireSession(correlation_id=commanded, session_id=commanded)
    await harness.broker.publish(
        command, exchange=COMMANDS, routing_key=CommandKey.EXPIRE_SESSION, persist=True
    )
    for session_id in (swept, commanded):
        finished = await harness.finished(session_id)
        assert finished["status"] == "EXPIRED" and finished["reasons"] == ["EXPIRED"]
        record = await harness.sessions.fetch(session_id)
        assert record is not None and record.status.value == "EXPIRED" and record.finished_at is not None
    await asyncio.sleep(1.5)
    for session_id in (swept, commanded):
        assert len(harness.events(EventKey.SESSION_FINISHED, session_id)) == 1


async def test_a_deadline_passed_while_no_worker_ran_expires_at_start(
    harness: Harness, settings: Settings, models: SessionModels
) -> None:
    session_id = await harness.new_session(expires_in_s=0.2)
    await asyncio.sleep(1.0)
    record = await harness.sessions.fetch(session_id)
    assert record is not None and record.status.value == "CREATED"  # nobody expired it yet
    worker = LivenessWorker(settings, models=models, store=harness.store)
    await worker.start()
    try:
        finished = await harness.finished(session_id)
    finally:
        await worker.stop()
    assert finished["status"] == "EXPIRED"
    record = await harness.sessions.fetch(session_id)
    assert record is not None and record.status.value == "EXPIRED"
    assert len(harness.events(EventKey.SESSION_FINISHED, session_id)) == 1


async def test_a_starting_worker_forgets_old_processed_commands_and_idle_rate_buckets(
    harness: Harness, settings: Settings, models: SessionModels
) -> None:
    """The housekeeping sweeper runs in the worker (and at once when it starts): on Postgres."""
    processed, limiter = ProcessedCommands(harness.factory), RateLimitRepository(harness.factory)
    client = f"client-{random.getrandbits(32):08x}"
    for message_id in ("old", "recent"):
        assert await processed.claim(client, message_id, "compare.faces", redelivered=False)
        await processed.finish(client, message_id, CommandStatus.DONE)
    idle, busy = f"session:idle-{client}", f"session:busy-{client}"
    for key in (idle, busy):
        await limiter.take(key, Limits(1.0, 30, None), datetime.now(UTC))
    async with harness.factory.begin() as session:
        await session.execute(
            update(ProcessedCommandRow)
            .where(ProcessedCommandRow.client_id == client, ProcessedCommandRow.message_id == "old")
            .values(received_at=datetime.now(UTC) - timedelta(seconds=settings.processed_command_keep_s + 60))
        )
        await session.execute(
            update(RateBucketRow)
            .where(RateBucketRow.client_key == idle)
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=settings.rate_bucket_idle_s + 60))
        )

    async def left() -> tuple[set[str], set[str]]:
        async with harness.factory() as session:
            commands = await session.scalars(
                select(ProcessedCommandRow.message_id).where(ProcessedCommandRow.client_id == client)
            )
            buckets = await session.scalars(
                select(RateBucketRow.client_key).where(RateBucketRow.client_key.in_([idle, busy]))
            )
            return set(commands.all()), set(buckets.all())

    worker = LivenessWorker(settings, models=models, store=harness.store)
    await worker.start()
    try:
        async with asyncio.timeout(WAIT_S):
            while await left() != ({"recent"}, {busy}):  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.2)
    finally:
        await worker.stop()


async def test_a_printed_photo_fails_and_the_matchers_answer_completes_the_result(
    harness: Harness, workers: list[LivenessWorker]
) -> None:
    photo = jpeg(np.asarray(cv2.imread(str(PEOPLE / "obama.jpg"), cv2.IMREAD_COLOR), dtype=np.uint8))
    await harness.store.put("sessions/reference-input.jpg", photo, "image/jpeg")
    session_id = await harness.new_session(reference_key="sessions/reference-input.jpg")
    # 4 frames a second (a slow camera) until the first challenge's 6 s are over
    count = 27
    keys = await harness.put_frames(session_id, [photo] * count)
    started_at = datetime.now(UTC)
    await harness.start_session(
        session_id, [Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.BLINK)], started_at
    )
    for sequence in range(count):
        await harness.publish_frame(
            session_id, sequence, keys[sequence], started_at + timedelta(seconds=sequence / 4)
        )

    await harness.wait_for(lambda: bool(harness.events(EventKey.LIVENESS_DECIDED, session_id)))
    decided = harness.events(EventKey.LIVENESS_DECIDED, session_id)[0]
    assert decided["is_live"] is False and "TIMEOUT" in decided["reasons"]
    await harness.wait_for(lambda: bool(harness.events(CommandKey.MATCH_REFERENCES, session_id)))
    match = harness.events(CommandKey.MATCH_REFERENCES, session_id)[0]
    assert match["probe"] == {"inline": None, "storage_key": f"sessions/{session_id}/reference.jpg"}
    assert match["references"] == [{"inline": None, "storage_key": "sessions/reference-input.jpg"}]
    assert (match["session_id"], match["flow_id"]) == (session_id, None)  # whose comparison it is
    record = await harness.sessions.fetch(session_id)
    assert record is not None and not record.status.terminal  # waiting for the matcher

    # answers to requests the worker did not send change nothing, whichever way they arrive (the
    # events exchange, or straight into its queue as a reply_to answer would): another session,
    # a forged request id, another client. Only the answer to its own request finishes it.
    model = ModelInfo(pack="test", licence="test", commercial_use=True)
    own = {"request_id": match["message_id"], "client_id": match["client_id"], "correlation_id": session_id}
    forged = [
        {**own, "session_id": "not-a-session"},
        {**own, "session_id": session_id, "request_id": "forged"},
        {**own, "session_id": session_id, "client_id": "another-client"},
        {**own, "flow_id": session_id},  # a call flow's answer, whatever its correlation id says
    ]
    for values in forged:
        answer = ReferencesMatched(**values, similarity=0.12, match=False, model=model)
        await harness.broker.publish(
            answer, exchange=EVENTS, routing_key=EventKey.REFERENCES_MATCHED, persist=True
        )
        await harness.broker.publish(answer, routing_key="liveness.references-matched", persist=True)
    not_an_answer = {"correlation_id": session_id, "similarity": 0.12, "match": False}  # FacesCompared-like
    await harness.broker.publish(not_an_answer, routing_key="liveness.references-matched", persist=True)
    await asyncio.sleep(2)
    record = await harness.sessions.fetch(session_id)
    assert record is not None and not record.status.terminal  # still waiting for its own answer
    answer = ReferencesMatched(**own, session_id=session_id, similarity=0.91, match=True, model=model)
    await harness.broker.publish(
        answer, exchange=EVENTS, routing_key=EventKey.REFERENCES_MATCHED, persist=True
    )
    finished = await harness.finished(session_id)
    assert finished["status"] == "FAILED" and "TIMEOUT" in finished["reasons"]
    record = await harness.sessions.fetch(session_id)
    assert record is not None and record.status.value == "FAILED" and record.result is not None
    result = record.result
    assert result.is_live is False and result.confidence is not None and result.confidence < 50
    assert result.comparison_result == 0.91 and result.comparison_match is True
    assert result.challenges[0] == ChallengeResult(
        type=ChallengeType.TURN_LEFT, status="FAILED", reason="TIMEOUT"
    )
    assert result.challenges[1].status == "PENDING"
