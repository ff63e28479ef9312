"""Faults on a stack of its own: a worker killed with SIGKILL mid-work and restarted, the object store
down, this vhost's broker connections and this database's connections cut.

Every service runs as a process (as `faceproof up` runs them) on a fresh RabbitMQ vhost, Postgres
database and SeaweedFS, so the test can kill and restart them. The shared RabbitMQ and Postgres
servers are never restarted: only this test's own connections are closed. The object store goes
last (SeaweedFS is stopped for good).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from examples.controller import Controller
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.scripted_subject import Media, ScriptedSubject
from faceproof.testing.webrtc_subject import FrameSource, Image, ScriptedSource, run_subject
from infra.db.engine import create_engine
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.conftest import SERVICES, TOKEN, _tail, free_port, migrate, postgres_database, stack_env
from tests.paths import DATA_DIR, MODELS_DIR, PEOPLE
from tests.support.broker import RabbitVhost, temporary_vhost
from tests.support.services import SeaweedFS, start_seaweedfs

pytestmark = pytest.mark.e2e

COMPARE_DEADLINE_S = 45.0  # long enough for a restarted matcher to answer what was in flight
TERMINAL = {"SUCCEEDED", "FAILED", "EXPIRED"}
PROBLEM = "application/problem+json"


@dataclass
class FaultStack:
    url: str
    env: dict[str, str]
    vhost: RabbitVhost
    database_url: str
    logs: Path
    seaweedfs: SeaweedFS
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    def start(self, name: str) -> None:
        argv = dict(SERVICES)[name]
        count = self.restarts.get(name, 0)
        log = self.logs / (f"{name}.log" if count == 0 else f"{name}.{count}.log")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "faceproof", *argv],
            env=self.env,
            cwd=Path(__file__).parents[2],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.restarts[name] = count + 1

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown code runs, unacknowledged messages go back to their queues."""
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def consumers(self, queue: str) -> int:
        return queue_stats(self.vhost, queue)[2]

    def wait_consuming(self, queue: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while self.consumers(queue) < 1:
            assert time.monotonic() < deadline, f"nobody consumes {queue}; logs:\n{_tail(self.logs)}"
            time.sleep(0.5)

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout)


def queue_stats(vhost: RabbitVhost, queue: str) -> tuple[int, int, int]:
    """(ready, unacknowledged, consumers) of ``queue`` in this test's vhost."""
    listing = subprocess.run(
        [
            *("rabbitmqctl", "-q", "list_queues", "-p", vhost.name),
            *("name", "messages_ready", "messages_unacknowledged", "consumers"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == queue:
            return int(fields[1]), int(fields[2]), int(fields[3])
    return 0, 0, 0


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    logs = tmp_path_factory.mktemp("fault-logs")
    seaweedfs = start_seaweedfs(tmp_path_factory.mktemp("fault-seaweedfs"))
    port = free_port()
    try:
        with temporary_vhost() as vhost, postgres_database() as database_url:
            env = stack_env(
                tmp_path_factory.mktemp("fault-data"),
                database_url=database_url,
                vhost=vhost,
                storage_url=seaweedfs.url,
                port=port,
            )
            env.update(
                {
                    "FACEPROOF_RATE_LIMITS": "false",
                    "FACEPROOF_COMPARE_TIMEOUT_S": str(COMPARE_DEADLINE_S),
                    "FACEPROOF_PROTOO_REQUEST_TIMEOUT_S": "3",
                    "FACEPROOF_CALLBACK_BACKOFF_S": "8",
                    "FACEPROOF_CALLBACK_BACKOFF_MAX_S": "10",
                    "FACEPROOF_FLOW_SWEEP_S": "0.5",
                    "FACEPROOF_METRICS_PORT": "0",  # no worker metrics servers (they would share a port)
                }
            )
            migrate(env)
            stack = FaultStack(f"http://127.0.0.1:{port}", env, vhost, database_url, logs, seaweedfs)
            names = [name for name, _ in SERVICES if name != "ingress"]
            try:
                for name in names:
                    stack.start(name)
                _wait_ready(stack)
                yield stack
            finally:
                for process in stack.processes.values():
                    if process.poll() is None:
                        process.terminate()
                for process in stack.processes.values():
                    try:
                        process.wait(20)
                    except subprocess.TimeoutExpired:
                        process.kill()
    finally:
        seaweedfs.stop()


def _wait_ready(stack: FaultStack, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in stack.processes.items():
            assert process.poll() is None, f"{name} exited early; logs:\n{_tail(stack.logs)}"
        try:
            if httpx.get(f"{stack.url}/readyz", timeout=3).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"the gateway was not ready; logs:\n{_tail(stack.logs)}")
    for queue in (
        "matcher.compare-faces",
        "liveness.frames",
        "notifier.deliver-callback",
        "call-agent.start-session",
    ):
        stack.wait_consuming(queue, max(10.0, deadline - time.monotonic()))


def compare_body() -> dict[str, str]:
    obama = base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
    obama2 = base64.b64encode((PEOPLE / "obama2.jpg").read_bytes()).decode()
    return {"source": obama, "target": obama2}


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int | None  # None: no answer (an exception: a hang or a dropped connection)
    content_type: str
    code: str | None


def compare_clients(stack: FaultStack, clients: int, stop: threading.Event) -> tuple[list[Answer], list[Any]]:
    """``clients`` threads posting compares until ``stop``; every answer recorded."""
    answers: list[Answer] = []
    body = compare_body()

    def loop() -> None:
        with stack.client(timeout=COMPARE_DEADLINE_S + 15) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/compare", json=body)
                except httpx.HTTPError:
                    answers.append(Answer(started, time.monotonic(), None, "", None))
                    continue
                code = response.json().get("code") if response.status_code != 200 else None
                answers.append(
                    Answer(
                        started,
                        time.monotonic(),
                        response.status_code,
                        response.headers["content-type"],
                        code,
                    )
                )

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return answers, threads


def assert_clean(answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.status is not None, f"a compare got no answer: {answer}"
        assert answer.ended - answer.started <= COMPARE_DEADLINE_S + 10, (
            f"answered past the deadline: {answer}"
        )
        if answer.status != 200:
            assert answer.status in (503, 504) and answer.content_type == PROBLEM, answer


# --------------------------------------------------------------------------- (a) matcher


def test_a_killed_matcher_loses_no_compare(faults: FaultStack) -> None:
    stop = threading.Event()
    answers, threads = compare_clients(faults, 3, stop)
    try:
        deadline = time.monotonic() + 60
        while sum(a.status == 200 for a in answers) < 3:  # the stream is flowing
            assert time.monotonic() < deadline, answers
            time.sleep(0.2)
        while queue_stats(faults.vhost, "matcher.compare-faces")[1] < 1:  # a compare in the matcher's hands
            assert time.monotonic() < deadline
        killed_at = time.monotonic()
        faults.kill("matcher")
        while (stats := queue_stats(faults.vhost, "matcher.compare-faces"))[1:] != (0, 0):
            assert time.monotonic() < killed_at + 30, stats  # the broker notices the dead connection
        assert stats[0] >= 1, "the in-flight compares went back to the queue"
        restarting_at = time.monotonic()
        faults.start("matcher")
        faults.wait_consuming("matcher.compare-faces")
        restarted_at = time.monotonic()
        while sum(a.status == 200 and a.started > restarted_at for a in answers) < 3:
            assert time.monotonic() < restarted_at + 90, answers
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(COMPARE_DEADLINE_S + 20)
    assert_clean(answers)
    # Sent before the kill, answered once the new matcher started (no matcher ran in between): the
    # requeued messages were redelivered to it.
    spanning = [a for a in answers if a.started < killed_at and a.ended > restarting_at]
    assert spanning and all(a.status == 200 for a in spanning), answers
    drained = time.monotonic() + 30
    while (stats := queue_stats(faults.vhost, "matcher.compare-faces"))[:2] != (0, 0):  # nothing left
        assert time.monotonic() < drained, stats
        time.sleep(0.5)


# --------------------------------------------------------------------------- (b) liveness worker


@dataclass
class SignalOnChallenge:
    """A scripted subject that raises a flag when the first instruction arrives."""

    inner: FrameSource
    challenged: threading.Event = field(default_factory=threading.Event)

    def instruct(self, message: dict[str, Any]) -> None:
        self.inner.instruct(message)
        self.challenged.set()

    def next_frame(self) -> Image:
        return self.inner.next_frame()


async def count_finished(
    stack: FaultStack, session_id: str, ready: asyncio.Event, until: asyncio.Event
) -> int:
    """SessionFinished events for ``session_id`` on an exclusive queue, until ``until`` is set."""
    connection = await aio_pika.connect(stack.vhost.url)
    count = 0
    async with connection:
        channel = await connection.channel()
        events = await channel.get_exchange("faceproof.events", ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(events, routing_key="session.finished")
        ready.set()
        while not until.is_set():
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.2)
            elif json.loads(message.body).get("session_id") == session_id:
                count += 1
    return count


def test_a_killed_liveness_worker_still_ends_the_session_once(faults: FaultStack) -> None:
    media = Media.from_path(DATA_DIR / "video" / "liveportrait_d3.mp4")
    analyzer = FrameAnalyzer.from_models_dir(MODELS_DIR, threads=1)
    source = SignalOnChallenge(
        ScriptedSource(ScriptedSubject(media, analyzer, segments=load_video_segments()))
    )
    with faults.client() as client:
        created = client.post(
            "/v1/sessions",
            json={
                "settings": {"challenges": 2, "challengeTypes": ["TURN_LEFT", "TURN_RIGHT"], "expiresInS": 90}
            },
        )
    assert created.status_code == 201, created.text
    session_id = created.json()["sessionId"]

    at_kill: list[str] = []

    def kill_and_restart() -> None:
        assert source.challenged.wait(60), "no instruction arrived"
        time.sleep(1.0)  # frames of the first challenge are being analysed
        with faults.client() as client:
            at_kill.append(client.get(f"/v1/sessions/{session_id}").json()["status"])
        faults.kill("liveness")
        faults.start("liveness")

    async def scenario() -> int:
        ready, done = asyncio.Event(), asyncio.Event()
        counter = asyncio.ensure_future(count_finished(faults, session_id, ready, done))
        await ready.wait()
        killer = asyncio.ensure_future(asyncio.to_thread(kill_and_restart))
        with contextlib.suppress(AssertionError, TimeoutError):  # the subject may give up; the
            # session must still end, once
            await run_subject(faults.url, session_id, created.json()["clientToken"], source, timeout_s=120)
        await killer
        status = await asyncio.to_thread(_wait_terminal, faults, session_id, 120)
        assert status in TERMINAL, status
        await asyncio.sleep(4)  # a duplicate SessionFinished would arrive now
        done.set()
        return await counter

    assert asyncio.run(scenario()) == 1
    assert at_kill == ["IN_PROGRESS"], at_kill  # the worker died mid-session


def _wait_terminal(stack: FaultStack, session_id: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    with stack.client() as client:
        while True:
            status: str = client.get(f"/v1/sessions/{session_id}").json()["status"]
            if status in TERMINAL or time.monotonic() > deadline:
                return status
            time.sleep(0.5)


# --------------------------------------------------------------------------- (c) notifier


def test_a_killed_notifier_still_delivers_one_callback(faults: FaultStack, tmp_path: Path) -> None:
    controller = Controller(images=tmp_path, quiet=True).start()
    controller.put_statuses = [503]  # the first attempt is refused: a retry is pending
    try:
        with faults.client() as client:
            started = client.post(
                "/v1/calls",
                json={
                    "ws_url": f"ws://127.0.0.1:{free_port()}/?roomId=r&peerId=p",  # nobody listens
                    "callback_base_url": controller.url,
                    "token": "fault-token",
                    "lang": "en",
                },
            )
            assert started.status_code == 202, started.text
            flow_id = started.json()["flowId"]
            deadline = time.monotonic() + 90
            while controller.put_statuses:  # attempt 1 answered 503; attempt 2 is ~8 s away
                assert time.monotonic() < deadline, client.get(f"/v1/calls/{flow_id}").json()
                time.sleep(0.2)
            faults.kill("notifier")
            faults.start("notifier")
            while not controller.callbacks:
                assert time.monotonic() < deadline, client.get(f"/v1/calls/{flow_id}").json()
                time.sleep(0.2)
            time.sleep(4)  # a second callback would arrive now
            state = client.get(f"/v1/calls/{flow_id}").json()
    finally:
        controller.stop()
    assert [c.outcome for c in controller.callbacks] == ["failure"], state
    assert state["status"] == "FAILED", state


# --------------------------------------------------------------------------- (e) connections cut


def _close_vhost_connections(vhost: RabbitVhost) -> int:
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "vhost", "pid"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    closed = 0
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == vhost.name:  # only this test's connections
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", fields[1], "faceproof fault test"],
                check=False,
                capture_output=True,
                timeout=60,
            )
            closed += 1
    return closed


async def _terminate_database_connections(database_url: str) -> int:
    """End every other connection to this test's own database (never another database's)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": make_url(database_url).database},
            )
            return len(rows.fetchall())
    finally:
        await engine.dispose()


def _recovers(stack: FaultStack, seconds: float = 90) -> list[int]:
    """Compares and session creations until both succeed; every answer on the way."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    with stack.client(timeout=COMPARE_DEADLINE_S + 15) as client:
        while True:
            compare = client.post("/v1/compare", json=compare_body())
            session = client.post("/v1/sessions", json={})
            statuses += [compare.status_code, session.status_code]
            if compare.status_code == 200 and session.status_code == 201:
                return statuses
            assert time.monotonic() < deadline, statuses
            time.sleep(1)


def test_services_reconnect_after_their_broker_and_database_connections_are_cut(faults: FaultStack) -> None:
    assert _close_vhost_connections(faults.vhost) >= 4  # gateway (2) and every worker
    after_broker = _recovers(faults)
    assert all(status < 500 or status in (503, 504) for status in after_broker), after_broker

    assert asyncio.run(_terminate_database_connections(faults.database_url)) >= 1
    after_database = _recovers(faults)
    assert after_database == [200, 201], after_database  # not one failed request: closed ones are replaced
    for name, process in faults.processes.items():
        assert process.poll() is None, f"{name} died; logs:\n{_tail(faults.logs)}"


# --------------------------------------------------------------------------- (d) object store down (last)


def test_the_object_store_down_answers_503_quickly_and_readyz_says_so(faults: FaultStack) -> None:
    faults.seaweedfs.stop()
    reference = base64.b64encode((PEOPLE / "obama.jpg").read_bytes()).decode()
    with faults.client(timeout=60) as client:
        started = time.monotonic()
        response = client.post("/v1/sessions", json={"reference": reference})
        elapsed = time.monotonic() - started
        ready = client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM and response.json()["code"] == "STORAGE_UNAVAILABLE"
    assert elapsed < 15, elapsed
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"] == "down", ready.json()  # and nothing about why (public)
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["broker"] == "ok"
