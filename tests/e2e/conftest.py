"""The gateway and the matcher as separate processes, on real RabbitMQ, Postgres and SeaweedFS;
the video-call flow's helpers (a scripted subject, one run_flow, a subject who walks into a real
mediasoup room)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import cv2
import httpx
import pytest

from contracts.routing import ALL_ROUTES
from examples.controller import Controller
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject
from faceproof.testing.scripted_subject import Media, ScriptedSubject
from faceproof.testing.webrtc_subject import FrameSource, OnScreen, ScriptedSource, SourceTrack
from infra.safe_fetch import FetchPolicy
from services.liveness.analysis import FrameAnalyzer
from tests.paths import DATA_DIR, MODELS_DIR, REPO_ROOT
from tests.support.broker import RabbitVhost, temporary_vhost
from tests.support.rooms import room_server  # noqa: F401 - the fixture, shared with tests/integration
from tests.support.services import SeaweedFS, create_test_database, drop_test_database, start_seaweedfs

TOKEN = "e2e-static-token"
#: The callback secret of the video-call tests' flows (their controller verifies with it).
SECRET = "e2e-callback-secret-0123456789"
#: liveportrait_d3 answers these with annotated segments (faceproof/testing/video_segments.json).
TURNS = ["TURN_LEFT", "TURN_RIGHT"]
#: What liveportrait_d3's annotated segments answer when judged from a neutral pose. Each
#: challenge's baseline is the first frames taken once its instruction is on screen, before the
#: subject reacts; d3's turn and look-up segments start already turned and pass only against their
#: own first frames (docs/liveness.md, "Get ready").
ANSWERABLE = ["LOOK_DOWN", "OPEN_MOUTH"]
#: The mediasoup room listens on 127.0.0.1: allow-listed, as the stack's FACEPROOF_FETCH_ALLOW_HOSTS.
LOOPBACK = FetchPolicy.create("127.0.0.1")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh Postgres database for this run, dropped afterwards."""
    url = asyncio.run(create_test_database())
    try:
        yield url
    finally:
        asyncio.run(drop_test_database(url))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    vhost: RabbitVhost
    logs: Path
    #: Each process's /metrics port (FACEPROOF_METRICS_PORT), the gateway's too (not its API port).
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def image_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], logs: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a service exited early ({process.args}); logs in {logs}:\n" + _tail(logs))
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the gateway was not ready within {seconds} s; logs:\n{_tail(logs)}")


def wait_consuming(
    vhost: RabbitVhost,
    processes: list[subprocess.Popen[bytes]],
    logs: Path,
    seconds: float = 120,
    *,
    queues: set[str] | None = None,
) -> None:
    """Until every worker queue (or each of ``queues``) has a consumer: the workers have loaded
    their models and listen."""
    wanted = queues if queues is not None else {route.queue for route in ALL_ROUTES}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a service exited early ({process.args}); logs in {logs}:\n" + _tail(logs))
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost.name, "name", "consumers", "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        consumed = {
            name
            for name, count in (line.split() for line in listing.splitlines() if line.strip())
            if int(count) > 0
        }
        if wanted <= consumed:
            return
        time.sleep(1)
    pytest.fail(f"workers did not consume {sorted(wanted)} within {seconds} s; logs:\n{_tail(logs)}")


def _tail(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


#: Every service, as `faceproof up` runs them: (log name, CLI arguments).
SERVICES: tuple[tuple[str, list[str]], ...] = (
    ("gateway", ["gateway"]),
    ("matcher", ["worker", "matcher"]),
    ("call-agent", ["worker", "call-agent"]),
    ("liveness", ["worker", "liveness"]),
    ("notifier", ["worker", "notifier"]),
    ("ingress", ["worker", "ingress"]),
)


def stack_env(
    data_dir: Path, *, database_url: str, vhost: RabbitVhost, storage_url: str, port: int
) -> dict[str, str]:
    """The environment of a test stack: its own database, vhost, bucket and port; one inference
    thread per process (2 cores); the example controller and the test SFU on 127.0.0.1 allowed;
    virtual cameras accepted (the browser test's camera is Chromium's fake device)."""
    return {
        **os.environ,
        "FACEPROOF_DATA_DIR": str(data_dir),
        "FACEPROOF_DATABASE_URL": database_url,
        "FACEPROOF_BROKER_URL": vhost.url,
        "FACEPROOF_STORAGE_URL": storage_url,
        "FACEPROOF_MODELS_DIR": str(MODELS_DIR),
        "FACEPROOF_API_TOKEN": TOKEN,
        "FACEPROOF_PORT": str(port),
        "FACEPROOF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "FACEPROOF_MATCHER_CONCURRENCY": "1",
        "FACEPROOF_LIVENESS_CONCURRENCY": "1",
        "FACEPROOF_INFERENCE_THREADS": "1",
        "FACEPROOF_FETCH_ALLOW_HOSTS": "127.0.0.1",
        "FACEPROOF_REJECT_VIRTUAL_CAMERAS": "false",
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "faceproof", "db", "upgrade"], env=env, cwd=REPO_ROOT, check=True)


@contextmanager
def start_stack(
    tmp_path_factory: pytest.TempPathFactory,
    seaweedfs: SeaweedFS,
    *,
    services: tuple[tuple[str, list[str]], ...] = SERVICES,
    overrides: dict[str, str] | None = None,
    queues: set[str] | None = None,
    name: str = "stack",
) -> Iterator[Stack]:
    """``services`` as separate processes on a fresh vhost, database and the S3 server, with
    ``overrides`` on top of :func:`stack_env`; yielded once the gateway is ready and ``queues``
    (default: every worker queue) are consumed; stopped afterwards. Each process serves /metrics
    on a port of its own (``Stack.metrics_ports``)."""
    logs = tmp_path_factory.mktemp(f"{name}-logs")
    port = free_port()
    with temporary_vhost() as vhost, postgres_database() as database_url:
        env = stack_env(
            tmp_path_factory.mktemp(f"{name}-data"),
            database_url=database_url,
            vhost=vhost,
            storage_url=seaweedfs.url,
            port=port,
        )
        env.update(overrides or {})
        migrate(env)
        metrics_ports = {service: free_port() for service, _ in services}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "faceproof", *argv],
                env={**env, "FACEPROOF_METRICS_PORT": str(metrics_ports[service])},
                cwd=REPO_ROOT,
                stdout=(logs / f"{service}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for service, argv in services
        ]
        try:
            wait_ready(f"http://127.0.0.1:{port}", processes, logs)
            wait_consuming(vhost, processes, logs, queues=queues)
            yield Stack(
                url=f"http://127.0.0.1:{port}", env=env, vhost=vhost, logs=logs, metrics_ports=metrics_ports
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS) -> Iterator[Stack]:
    """The gateway and every worker as separate processes on fresh RabbitMQ, Postgres and S3 spaces.
    A call waits 25 s for its subject's video (a subject walks in 10 s after the agent)."""
    overrides = {"FACEPROOF_NO_VIDEO_TIMEOUT_S": "25"}
    with start_stack(tmp_path_factory, seaweedfs, overrides=overrides) as running:
        yield running


@pytest.fixture(scope="module")
def d3() -> Media:
    """A real face video the scripted subjects play (its annotated segments answer challenges)."""
    return Media.from_path(DATA_DIR / "video" / "liveportrait_d3.mp4")


@pytest.fixture(scope="module")
def analyzer() -> FrameAnalyzer:
    return FrameAnalyzer.from_models_dir(MODELS_DIR, threads=1)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    """The example controller on 127.0.0.1, serving reference images from a folder of its own."""
    folder = tmp_path / "references"
    folder.mkdir()
    running = Controller(images=folder, secret=SECRET, quiet=True).start()
    yield running
    running.stop()


def scripted(media: Media, analyzer: FrameAnalyzer) -> ScriptedSource:
    return ScriptedSource(ScriptedSubject(media, analyzer, segments=load_video_segments()))


def write_jpeg(image_path: Path, media: Media, index: int) -> None:
    ok, encoded = cv2.imencode(".jpg", media.frame(index))
    assert ok
    image_path.write_bytes(encoded.tobytes())


async def follow_instructions(
    stack: Stack, source: FrameSource, session: asyncio.Future[str], bound: asyncio.Event
) -> None:
    """The subject in the room sees the instructions drawn in the video; the script reads them
    from the ChallengeIssued events instead (what the agent draws is checked elsewhere), and
    answers each once the agent's video shows it (a FrameCaptured's ``shown``; OnScreen), as a
    person would. ``bound`` is set once its queue is bound: a flow started before would lose its
    first instruction."""
    screen = OnScreen(source)
    connection = await aio_pika.connect_robust(stack.vhost.url)
    async with connection:
        channel = await connection.channel()
        events = await channel.get_exchange("faceproof.events", ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(events, routing_key="challenge.issued")
        await queue.bind(events, routing_key="frame.captured")
        bound.set()
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    body = json.loads(message.body)
                    if not session.done() or body["session_id"] != session.result():
                        continue
                    if message.routing_key == "challenge.issued":
                        screen.instruct(body)
                    else:
                        screen.seen(body.get("shown"))


async def run_flow(
    stack: Stack,
    controller: Controller,
    room_url: str,
    source: FrameSource | None,
    *,
    timeout_s: float = 150,
    token: str = "call-token-1",
    **fields: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a flow in the room at ``room_url``, answer its instructions, wait for the controller's
    callback; (flow, callback)."""
    session: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    bound = asyncio.Event()
    follower = asyncio.ensure_future(follow_instructions(stack, source, session, bound)) if source else None
    try:
        if follower is not None:
            await asyncio.wait_for(bound.wait(), 30)
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as http:
            started = await http.post(
                "/v1/calls",
                json={
                    "ws_url": room_url,
                    "callback_base_url": controller.url,
                    "token": token,
                    "lang": "es",
                    "settings": {"challenges": 2, "challengeTypes": ANSWERABLE, "callbackSecret": SECRET},
                    **fields,
                },
            )
            assert started.status_code == 202, started.text
            flow = started.json()
            session.set_result(flow["sessionId"])
            deadline = time.monotonic() + timeout_s
            while not controller.callbacks and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread fills it
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # a second callback would arrive now
            state = (await http.get(f"/v1/calls/{flow['flowId']}")).json()
    finally:
        if follower is not None:  # stopped while its broker connection can still close cleanly
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    assert len(controller.callbacks) == 1, (controller.callbacks, state)
    callback = controller.callbacks[0]
    assert callback.signature_valid is True
    return state, {"outcome": callback.outcome, "result": callback.result}


async def agent_in_the_room(room: MediasoupRoom, room_id: str) -> None:
    """The call agent joined and produces its instruction video."""
    await room.wait_for(lambda: bool(room.of("produced", roomId=room_id, peerId="faceproof")), 60)


async def settle(task: asyncio.Future[None]) -> None:
    """The subject's part is over once the flow's callback came: stop it if it still waits (the
    callback's assertion says what went wrong)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await task


async def flow_with_subject(
    stack: Stack,
    controller: Controller,
    room: MediasoupRoom,
    room_id: str,
    source: ScriptedSource,
    *,
    late_s: float = 0.0,
    **flow: Any,
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A flow in ``room_id`` of the real room, whose scripted subject (a pymediasoup peer) walks in
    ``late_s`` after the call agent produced its video, as people do; (flow, callback, frames of
    the agent's instruction video the subject received)."""
    subject = RoomSubject(SourceTrack(source), policy=LOOPBACK)

    async def walk_in() -> None:
        await agent_in_the_room(room, room_id)
        await asyncio.sleep(late_s)
        await subject.join(room.url(room_id, "subject"))

    arrival = asyncio.ensure_future(walk_in())
    try:
        state, callback = await run_flow(stack, controller, room.url(room_id, "faceproof"), source, **flow)
    finally:
        await settle(arrival)
        await subject.leave()
    return state, callback, subject.received_frames


def session_log(stack: Stack, state: dict[str, Any]) -> list[str]:
    """The liveness worker's and the call agent's lines about this flow (why it failed)."""
    lines: list[str] = []
    for name in ("liveness.log", "call-agent.log"):
        path = stack.logs / name
        if path.exists():
            keys = (state.get("sessionId", "?"), state.get("flowId", "?"))
            lines += [line[:300] for line in path.read_text().splitlines() if any(k in line for k in keys)]
    return lines[-30:]
