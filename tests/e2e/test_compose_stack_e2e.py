"""The deployment as an operator brings it up: the images of deploy/ built (scripts/local-images, on a
private dockerd), `docker compose up` of deploy/compose/compose.yaml with the test-only
compose.local.yaml (scripts/local-compose), then a compare, a hosted liveness session with a scripted
WebRTC subject and a video-call flow through it, and every faceproof container killed and restarted
while compares stream.

It skips only where dockerd cannot start here (printing why). The images are cached in
~/.cache/faceproof/dockerd (FACEPROOF_DOCKER_DIR): the first build takes minutes (deploy/README.md),
later runs rebuild only the project's layer when the code changed. The heavy part is the last test:
six kills, each waiting for the container to be ready again (82 s of the module's 204 s on 2 shared
cores at load average 30 to 38; deploy/README.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from examples.controller import Controller
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import SourceTrack
from services.liveness.analysis import FrameAnalyzer
from tests.e2e.conftest import TOKEN, Stack, image_b64, run_flow, write_jpeg
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
    ComposeStack,
    Unavailable,
    build_images,
    compose_stack,
    docker_env,
    stop_docker,
)
from tests.support.test_sfu import TestSfu

#: The first test's setup builds the images (about 6 minutes on a new machine) and brings the stack up;
#: the last kills and restarts six containers: more than the suite's 300 s each under load.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

#: The gateway's compare deadline in this stack (FACEPROOF_COMPARE_TIMEOUT_S): a compare whose
#: matcher is gone answers 504 after it.
COMPARE_TIMEOUT_S = 8.0
#: What a caller waits at most for any answer: the deadline plus the gateway's own work.
ANSWER_WITHIN_S = COMPARE_TIMEOUT_S + 4.0

SETTINGS = {
    "FACEPROOF_COMPARE_TIMEOUT_S": str(COMPARE_TIMEOUT_S),
    "FACEPROOF_FETCH_ALLOW_HOSTS": "127.0.0.1",  # the example controller and the test SFU
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


def test_a_video_call_flow_succeeds_with_one_callback(
    stack: Stack, controller: Controller, d3: Media, analyzer: FrameAnalyzer
) -> None:
    write_jpeg(controller.images / "reference.jpg", d3, len(d3.frames) - 1)

    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        source = scripted_call_source(d3, analyzer)
        async with TestSfu(subject=SourceTrack(source)) as sfu:
            return await run_flow(stack, controller, sfu.url(), source)

    state, callback = asyncio.run(scenario())
    assert callback["outcome"] == "success", (callback, state)
    assert state["status"] == "SUCCEEDED" and state["match"] is True, state
    assert state["callback"]["delivery"] == "DELIVERED", state


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


def test_each_faceproof_container_killed_and_restarted_under_a_compare_stream(compose: ComposeStack) -> None:
    """`docker kill` (SIGKILL, no shutdown) of each faceproof container in turn, then `docker start`,
    while compares stream: every compare answers 200, 503 or 504 within its deadline (a killed
    gateway refuses connections instead), every worker has its queues' consumers back, and the stream
    answers 200 again. The counts are printed."""
    report: dict[str, Counter[str]] = {}
    with CompareStream(compose.url) as stream:
        time.sleep(3)
        for service in APP_SERVICES:
            began = time.monotonic()
            compose.docker("kill", compose.containers[service])
            time.sleep(2)
            compose.docker("start", compose.containers[service])
            back_s = compose.wait_ready(seconds=180)
            time.sleep(2)  # compares after the return
            seen = stream.since(began)
            report[service] = Counter(outcome.answer for outcome in seen)
            allowed = ANSWERS | (NO_GATEWAY if service == "gateway" else set())
            assert {outcome.answer for outcome in seen} <= allowed, (service, report[service])
            late = [o for o in seen if o.answer in ANSWERS and o.seconds > ANSWER_WITHIN_S]
            assert not late, (service, [(o.answer, round(o.seconds, 1)) for o in late])
            print(
                f"\n{service}: killed, started, ready again in {back_s:.0f} s; "
                f"compares {dict(report[service])}"
            )
    after = compare(compose.url, image_b64(PEOPLE / "obama.jpg"), image_b64(PEOPLE / "obama2.jpg"))
    assert after.status_code == 200 and after.json()["match"] is True, after.text
    assert not compose.unconsumed()
    # a compare queued while the matcher was down may still be in work: unacked until it is done
    deadline = time.monotonic() + 60
    while (stuck := {n: c for n, c in compose.queues().items() if c[2] > 0}) and time.monotonic() < deadline:
        time.sleep(1)
    assert stuck == {}, f"unacknowledged messages left after 60 s: {stuck}"
    assert any(outcome.answer == "200" for outcome in stream.outcomes[-3:])
