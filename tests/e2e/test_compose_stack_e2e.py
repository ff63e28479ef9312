"""The deployment as an operator brings it up: the images of deploy/ built (scripts/local-images, on a
private dockerd), `docker compose up` of deploy/compose/compose.yaml with the test-only
compose.local.yaml (scripts/local-compose), then a compare, a hosted liveness session with a scripted
WebRTC subject and a video-call flow through a real mediasoup room, and then the faults: every
faceproof container killed and restarted, the RabbitMQ and the Postgres container restarted, while
compares stream and hosted sessions and call flows run (tests/e2e/compose_load.py).

It skips only where dockerd cannot start here (printing why). The images are cached in
~/.cache/faceproof/dockerd (FACEPROOF_DOCKER_DIR): the first build takes minutes (deploy/README.md),
later runs rebuild only the project's layer when the code changed. The heavy part is the last test:
eight faults, each waiting for the stack to be ready again, then for every session and flow to end
(deploy/README.md has the times measured).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from examples.controller import DELIVERY_HEADER, Controller
from faceproof.bench.restarts import bind_finished, drain_finished
from faceproof.testing.mediasoup_room import MediasoupRoom, run_bounded
from faceproof.testing.scripted_subject import Media
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.compose_load import (
    FINISHED_QUEUE,
    SESSION_EXPIRES_S,
    TERMINAL,
    Load,
)
from tests.e2e.conftest import TOKEN, Stack, flow_with_subject, image_b64, write_jpeg
from tests.e2e.conftest import scripted as scripted_call_source
from tests.e2e.test_liveness_sessions_e2e import (
    ANSWERABLE,
    create_session,
    join,
    jpeg_b64,
    scripted,
    wait_terminal,
)
from tests.paths import PEOPLE
from tests.support.compose_stack import (
    APP_SERVICES,
    IMAGE,
    INFRA_SERVICES,
    ComposeStack,
    Unavailable,
    build_images,
    compose_stack,
    docker_env,
    stop_docker,
)

#: The first test's setup builds the images (about 6 minutes on a new machine) and brings the stack up;
#: the last runs eight faults under load: more than the suite's 300 s each under load.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

#: The gateway's compare deadline in this stack (FACEPROOF_COMPARE_TIMEOUT_S): a compare whose
#: matcher is gone answers 504 after it.
COMPARE_TIMEOUT_S = 8.0
#: What a caller waits at most for any answer: the deadline plus the gateway's own work.
ANSWER_WITHIN_S = COMPARE_TIMEOUT_S + 4.0

SETTINGS = {
    "FACEPROOF_COMPARE_TIMEOUT_S": str(COMPARE_TIMEOUT_S),
    "FACEPROOF_FETCH_ALLOW_HOSTS": "127.0.0.1",  # the example controller and the mediasoup room
    "FACEPROOF_INFERENCE_THREADS": "1",  # 2 cores, six processes
    "FACEPROOF_MATCHER_CONCURRENCY": "1",
    "FACEPROOF_LIVENESS_CONCURRENCY": "1",
    "FACEPROOF_NO_VIDEO_TIMEOUT_S": "8",
}


@dataclass(frozen=True)
class Broker:
    """The stack's RabbitMQ as tests/e2e's helpers address it (``.url``)."""

    url: str


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    try:
        env = docker_env()
    except Unavailable as reason:
        pytest.skip(f"dockerd cannot start here: {reason}")
    try:
        build_s = build_images(env)
        with compose_stack(tmp_path_factory.mktemp("compose"), env, SETTINGS, token=TOKEN) as running:
            print(
                f"\nimages (scripts/local-images) {build_s:.0f} s; `up` to a ready stack {running.up_s:.0f} s"
            )
            yield running
    finally:
        stop_docker(env)


@pytest.fixture(scope="module")
def stack(compose: ComposeStack) -> Stack:
    """The compose stack as the other e2e modules' helpers take it."""
    return Stack(url=compose.url, env={}, vhost=Broker(compose.broker_url), logs=compose.workdir)  # type: ignore[arg-type]


def compare(url: str, source: str, target: str) -> httpx.Response:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        return client.post("/v1/compare", json={"source": source, "target": target})


def test_the_stack_comes_up_with_migrations_run_once_before_the_workers(compose: ComposeStack) -> None:
    migrate = compose.inspect("migrate")
    state = migrate["State"]
    assert isinstance(state, dict) and state["ExitCode"] == 0 and state["Status"] == "exited"
    assert state["Restarting"] is False
    assert migrate["RestartCount"] == 0
    migrated_at = state["FinishedAt"]
    assert compose.docker("logs", compose.containers["migrate"]).count("database at revision") == 1
    for service in APP_SERVICES:
        started = compose.inspect(service)["State"]
        assert isinstance(started, dict)
        assert started["StartedAt"] > migrated_at, f"{service} started before the migrations ended"
        assert compose.health(service) == "healthy", service
    models = compose.inspect("models")["State"]
    assert isinstance(models, dict) and models["ExitCode"] == 0


def test_the_image_runs_as_non_root_with_a_health_check_and_no_model_or_secret(compose: ComposeStack) -> None:
    config = compose.docker(
        "image", "inspect", "-f", "{{.Config.User}} {{json .Config.Healthcheck.Test}}", IMAGE
    )
    user, health = config.split(" ", 1)
    assert user == "10001:10001" and "faceproof-healthcheck" in health
    for service in APP_SERVICES:
        assert compose.docker("exec", compose.containers[service], "id", "-u").strip() == "10001", service
    inside = compose.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
        "ls -A /models; find / -xdev \\( -name '*.onnx' -o -name '.env' -o -name '*.key' \\) "
        "-not -path '*/site-packages/*' -print 2>/dev/null; "
        "grep -rl 'PRIVATE KEY' /app /etc /var/lib/faceproof /root 2>/dev/null | grep -v site-packages; "
        "env | grep -c -i -E 'password|secret|token' || true",
    )  # fmt: skip
    assert inside.split() == ["0"], inside  # no model, no env file or key, no secret in the environment
    size = int(compose.docker("image", "inspect", "-f", "{{.Size}}", IMAGE))
    print(f"\n{IMAGE}: {size / 1e6:.0f} MB")


def test_a_compare_succeeds_through_the_stack(compose: ComposeStack) -> None:
    answer = compare(compose.url, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["match"] is True
    other = compare(compose.url, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "biden.jpg"))
    assert other.status_code == 200 and other.json()["match"] is False, other.text


def test_a_hosted_session_with_a_scripted_webrtc_subject_succeeds(
    stack: Stack, d3: Media, analyzer: FrameAnalyzer
) -> None:
    created = create_session(
        stack,
        settings={"challenges": 2, "challengeTypes": ANSWERABLE, "auditImages": 1},
        reference=jpeg_b64(frame_of=d3, index=len(d3.frames) - 1),
    )
    run = join(stack, created, scripted(d3, analyzer))
    assert run.frames_received > 0, "the instruction video never arrived"
    result = wait_terminal(stack, created["sessionId"])
    assert result["status"] == "SUCCEEDED", (result, run.messages)
    assert result["isLive"] is True and result["comparisonResult"] >= 0.5
    image = httpx.get(result["referenceImage"]["url"], timeout=30)  # a presigned URL of the S3 server
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"


@pytest.mark.usefixtures("room_server")
def test_a_video_call_flow_through_a_real_mediasoup_room_succeeds_with_one_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with MediasoupRoom() as room:
            return await flow_with_subject(
                stack, controller, room, "compose", scripted_call_source(d3, analyzer)
            )

    state, callback, instruction_frames = run_bounded(scenario())
    assert callback["outcome"] == "success", (callback, state)
    assert state["status"] == "SUCCEEDED" and state["match"] is True, state
    assert state["callback"]["delivery"] == "DELIVERED", state
    assert instruction_frames > 0, "the subject never received the call agent's instruction video"


@dataclass
class Outcome:
    """One compare of the stream: its answer (status or error class) and how long it took."""

    answer: str
    seconds: float
    started: float


class CompareStream:
    """Compares one after another on a thread until stopped; every outcome kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._body = {"source": image_b64(PEOPLE / "obama.jpg"), "target": image_b64(PEOPLE / "obama2.jpg")}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CompareStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=ANSWER_WITHIN_S + 20) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = str(client.post("/v1/compare", json=self._body).status_code)
                    if answer == "503":  # refused at once: back off a little, as a client should (a
                        time.sleep(0.5)  # stream that spun was rate limited, 429, in 1 run of 10)
                except httpx.HTTPError as error:
                    answer = type(error).__name__
                    time.sleep(0.5)  # the gateway is down: do not spin
                self.outcomes.append(Outcome(answer, time.monotonic() - started, started))

    def since(self, moment: float) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.started >= moment]


#: What a compare may answer while a container is down: its result, or the documented 503/504.
ANSWERS = {"200", "503", "504"}
#: And while the gateway itself is down: no connection (refused or reset); nothing else.
NO_GATEWAY = {"ConnectError", "RemoteProtocolError", "ReadError"}


#: The faults in order: `docker kill` + `docker start` of each faceproof container, then a restart
#: (`docker stop`, down a few seconds, `docker start`) of the RabbitMQ and the Postgres container.
FAULTS = (*APP_SERVICES, "rabbitmq", "postgres")
#: What a session creation or a call start may answer instead of 201/202 while a fault lasts.
REFUSALS = {"503", "504"} | NO_GATEWAY
#: The infra containers' seconds down (as `faceproof bench soak --restart`'s --down).
DOWN_S = 3


@dataclass
class Fault:
    target: str
    #: Seconds from the container's start until the stack was ready again (every queue consumed).
    back_s: float
    compares: Counter[str]
    late: list[tuple[str, float]]
    #: Sessions and flows under way when the fault began, and all that overlapped it.
    running: tuple[int, int]
    overlapped: tuple[int, int]

    def line(self) -> str:
        return (
            f"{self.target}: ready again in {self.back_s:.0f} s; under way at the fault "
            f"{self.running[0]} session(s), {self.running[1]} call flow(s) (overlapping it "
            f"{self.overlapped[0]}, {self.overlapped[1]}); compares {dict(self.compares)}"
        )


def run_faults(compose: ComposeStack, stream: CompareStream, load: Load) -> list[Fault]:
    """Each fault of FAULTS in turn, once a session and a flow are under way (or after 180 s)."""
    faults: list[Fault] = []
    for target in FAULTS:
        deadline = time.monotonic() + 180
        while min(load.running(time.monotonic())) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        began = time.monotonic()
        running = load.running(began)
        container = compose.containers[target]
        if target in APP_SERVICES:
            compose.docker("kill", container)
            time.sleep(2)
        else:
            compose.docker("stop", "--time", "30", container, timeout=120)
            time.sleep(DOWN_S)
        compose.docker("start", container)
        back_s = compose.wait_ready(seconds=300, services=(*APP_SERVICES, *INFRA_SERVICES))
        time.sleep(2)  # compares after the return
        seen = stream.since(began)
        late = [
            (o.answer, round(o.seconds, 1))
            for o in seen
            if o.answer in ANSWERS and o.seconds > ANSWER_WITHIN_S
        ]
        fault = Fault(
            target,
            back_s,
            Counter(o.answer for o in seen),
            late,
            running,
            load.overlapping(began, time.monotonic()),
        )
        print(f"\n{fault.line()}", flush=True)
        faults.append(fault)
    return faults


def session_ends(compose: ComposeStack, ids: list[str], within_s: float) -> dict[str, dict[str, Any]]:
    """Each session's resource once all are terminal (or at ``within_s``: ``status`` UNKNOWN if
    never read)."""
    ends: dict[str, dict[str, Any]] = {session_id: {"status": "UNKNOWN"} for session_id in ids}
    deadline = time.monotonic() + within_s
    with httpx.Client(
        base_url=compose.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        while True:
            for session_id in [s for s, end in ends.items() if end["status"] not in TERMINAL]:
                answer = client.get(f"/v1/sessions/{session_id}")
                if answer.status_code == 200:
                    ends[session_id] = answer.json()
            if all(end["status"] in TERMINAL for end in ends.values()) or time.monotonic() > deadline:
                return ends
            time.sleep(1)


def quiet_queues(compose: ComposeStack, within_s: float = 120) -> dict[str, tuple[int, int, int]]:
    """Every queue (but the test's own) once none holds a ready or unacknowledged message (or at
    ``within_s``): a compare queued while the matcher was down may still be in work."""
    deadline = time.monotonic() + within_s
    while True:
        queues = {name: state for name, state in compose.queues().items() if name != FINISHED_QUEUE}
        if not any(ready or unacked for _, ready, unacked in queues.values()) or time.monotonic() > deadline:
            return queues
        time.sleep(1)


def repeats(compose: ComposeStack, controller: Controller, callbacks: dict[str, int]) -> list[str]:
    """For each flow called back more than once: each callback's outcome and delivery id, then the
    notifier's and call agent's log lines about those flows (ids and outcomes only)."""
    tokens = {token for token, count in callbacks.items() if count > 1}
    sent = [
        (c.token, c.outcome, c.headers.get(DELIVERY_HEADER))
        for c in controller.callbacks
        if c.token in tokens
    ]
    flows = {flow_id for _, _, flow_id in sent if flow_id}
    lines = compose.logs_tail(lines=100_000, services=("notifier", "call-agent")).splitlines()
    return [*map(str, sent), *(line for line in lines if any(flow_id in line for flow_id in flows))]


@pytest.mark.timeout(1800)
@pytest.mark.usefixtures("room_server")
def test_faults_under_compares_sessions_and_call_flows_lose_nothing(
    compose: ComposeStack, stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    """While compares stream, hosted sessions (scripted WebRTC subject) run one after another and
    video-call flows run one after another through a real mediasoup room: `docker kill` and
    `docker start` of each faceproof container in turn, then a restart of the RabbitMQ container and
    of the Postgres container, each once a session and a flow are under way. Then: every compare
    answered 200, 503 or 504 within its deadline (a killed gateway refuses connections instead);
    every session in exactly one terminal status, with exactly one SessionFinished; every accepted
    flow exactly one signed callback; every queue consumed again, nothing ready, unacknowledged
    or dead-lettered. The counts are printed."""
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)
    asyncio.run(bind_finished(compose.broker_url, FINISHED_QUEUE))
    load = Load(stack, controller, d3, analyzer)
    started = time.monotonic()
    with CompareStream(compose.url) as stream:
        faults = run_bounded(load.run(lambda: run_faults(compose, stream, load)))
        load_s = time.monotonic() - started
        ends = session_ends(compose, list(load.sessions), within_s=SESSION_EXPIRES_S + 60)
    statuses = {session_id: end["status"] for session_id, end in ends.items()}
    reasons = Counter(reason for end in ends.values() for reason in end.get("reasons") or [])
    time.sleep(5)  # a second callback or SessionFinished would arrive now
    queues = quiet_queues(compose)
    finished = asyncio.run(drain_finished(compose.broker_url, FINISHED_QUEUE, delete=True))

    callbacks = {token: load.callbacks(token) for token in load.flows}
    late_callbacks = {token: load.callbacks(token) for token in load.refused_tokens}
    mine = [c for c in controller.callbacks if c.token in load.flows]
    compares = Counter(o.answer for o in stream.outcomes)
    print(
        f"\nfaults under load ({load_s:.0f} s): compares {dict(compares)}; "
        f"sessions {len(load.sessions)} {dict(Counter(statuses.values()))} (reasons {dict(reasons)}), "
        f"SessionFinished per "
        f"session {dict(Counter(finished[s] for s in load.sessions))}; call flows {len(load.flows)}, "
        f"callbacks per flow {dict(Counter(callbacks.values()))}, "
        f"{dict(Counter(c.outcome for c in mine))}, callbacks for refused starts "
        f"{sum(late_callbacks.values())}; refused starts "
        f"{dict(Counter(f'{kind} {answer}' for _, kind, answer in load.refused))}; subject-side errors "
        f"{dict(load.subject_errors)}; queues after {queues}",
        flush=True,
    )

    for fault in faults:
        allowed = ANSWERS | (NO_GATEWAY if fault.target == "gateway" else set())
        assert set(fault.compares) <= allowed, fault.line()
        assert not fault.late, (fault.target, fault.late)
        assert fault.running[0] >= 1 and fault.running[1] >= 1, f"nothing under way: {fault.line()}"
    assert {answer for _, _, answer in load.refused} <= REFUSALS, load.refused
    assert all(status in TERMINAL for status in statuses.values()), statuses
    assert all(finished[s] == 1 for s in load.sessions), {s: finished[s] for s in load.sessions}
    assert all(count == 1 for count in callbacks.values()), (
        callbacks,
        repeats(compose, controller, callbacks),
    )
    assert all(count <= 1 for count in late_callbacks.values()), late_callbacks
    assert all(c.signature_valid is True for c in mine)
    assert not compose.unconsumed()
    assert all(ready == unacked == 0 for _, ready, unacked in queues.values()), queues
    after = compare(compose.url, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert after.status_code == 200 and after.json()["match"] is True, after.text
