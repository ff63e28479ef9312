"""Attacks on the request guard (services/gateway/limits.py) against the gateway as it runs in
production: `faceproof gateway` as its own process, on real PostgreSQL and RabbitMQ (a throw-away
vhost), over TCP. Before the guard, a crafted 32 KiB body held the event loop for 6 s (a regex that
backtracked, before authentication), so one request froze every other; a repeated Content-Type
let a body past the depth and NUL checks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from infra.db.engine import create_engine, session_factory
from infra.db.repositories import ApiClientRepository
from tests.paths import REPO_ROOT
from tests.support.broker import temporary_vhost
from tests.support.services import free_ports

pytestmark = pytest.mark.integration

TOKEN = "guard-static-token"
MiB = 1024 * 1024
#: What "well under a second" means here, on a shared 2-core machine.
FAST_S = 1.0
BODY_TIMEOUT_S = 3
MAX_CONNECTIONS = 40


@dataclass
class Gateway:
    url: str
    port: int

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("guard")
    port = free_ports(1)[0]
    with temporary_vhost() as vhost:
        env = {
            **os.environ,
            "FACEPROOF_DATA_DIR": str(data),
            "FACEPROOF_DATABASE_URL": postgres_url,
            "FACEPROOF_BROKER_URL": vhost.url,
            "FACEPROOF_STORAGE_URL": (data / "objects").as_uri(),
            "FACEPROOF_API_TOKEN": TOKEN,
            "FACEPROOF_PORT": str(port),
            "FACEPROOF_METRICS_PORT": "0",
            "FACEPROOF_STATIC_BURST": "100000",
            "FACEPROOF_COMPARE_TIMEOUT_S": "1",
            "FACEPROOF_OFFER_TIMEOUT_S": "1",
            "FACEPROOF_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            "FACEPROOF_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        }
        log = (data / "gateway.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "faceproof", "gateway"], env=env, cwd=REPO_ROOT, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, data / "gateway.log")
            yield Gateway(url, port)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("the gateway exited:\n" + log.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail("the gateway was not ready:\n" + log.read_text()[-3000:])


class _Prober(threading.Thread):
    """Asks /readyz every 50 ms while an attack runs; keeps each answer's status and latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._done = threading.Event()
        self.answers: list[tuple[int, float]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self._url, timeout=10) as client:
            while not self._done.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/readyz").status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((status, time.perf_counter() - started))
                self._done.wait(0.05)

    def stop(self) -> list[tuple[int, float]]:
        self._done.set()
        self.join(15)
        return self.answers


def _crafted(size: int) -> dict[str, bytes]:
    """1 MiB bodies built to be the worst case of a JSON pre-check."""
    field = b'{"reference": "'
    fill = size - len(field)
    return {
        # one string that never ends, all escaped quotes: the old regex's quadratic case
        "unterminated": field + b'\\"' * (fill // 2),
        # quotes only: a string opened and closed at every byte
        "quotes": field + b'"' * fill,
        # nesting as deep as the body allows
        "deep": b"[" * size,
        # a NUL escape after a run of backslashes, over and over
        "nul": field + b"\\\\\\u0000" * (fill // 8),
    }


def test_crafted_1_mib_bodies_are_refused_fast_while_readyz_answers(gateway: Gateway) -> None:
    prober = _Prober(gateway.url)
    prober.start()
    time.sleep(0.3)
    results = {}
    with gateway.client() as client:
        for name, body in _crafted(MiB).items():
            started = time.perf_counter()
            response = client.post("/v1/sessions", content=body, headers={"content-type": "application/json"})
            results[name] = (response.status_code, response.json()["code"], time.perf_counter() - started)
    time.sleep(0.3)
    answers = prober.stop()
    assert results["unterminated"][:2] == (400, "MALFORMED_JSON"), results
    assert results["quotes"][:2] == (400, "MALFORMED_JSON"), results
    assert results["deep"][:2] == (400, "JSON_TOO_DEEP"), results
    assert results["nul"][:2] == (400, "INVALID_CHARACTER"), results
    assert all(elapsed < FAST_S for _, _, elapsed in results.values()), results
    assert len(answers) >= 5 and all(status == 200 for status, _ in answers), answers
    assert max(latency for _, latency in answers) < FAST_S, answers


def test_unauthenticated_large_body_is_401_before_it_is_sent(gateway: Gateway) -> None:
    """Headers announcing 20 MiB and 1 KiB of body: the answer comes without the rest."""
    for authorization in (b"", b"Authorization: Bearer not-a-key\r\n", b"Authorization: Basic eDp5\r\n"):
        status, elapsed = _announce(gateway.port, b"/v1/compare", 20 * MiB, authorization)
        assert status == 401 and elapsed < FAST_S, (authorization, status, elapsed)
    # the browser's route without a client token: the same, before its (small) body
    status, _ = _announce(gateway.port, b"/v1/sessions/s-1/offer", 100 * 1024, b"")
    assert status == 401


def test_a_client_over_its_rate_limit_is_429_before_its_body_is_sent(
    gateway: Gateway, postgres_url: str
) -> None:
    async def create_key() -> str:
        engine = create_engine(postgres_url)
        try:
            _, key = await ApiClientRepository(session_factory(engine)).create(
                "guard-limited", rate_per_second=0.001, burst=1
            )
        finally:
            await engine.dispose()
        return key

    key = asyncio.run(create_key())
    with gateway.client(key) as client:  # the one request of its burst
        assert client.get("/v1/sessions/none").status_code == 404
    bearer = f"Authorization: Bearer {key}\r\n".encode()
    status, elapsed = _announce(gateway.port, b"/v1/compare", 20 * MiB, bearer)
    assert status == 429 and elapsed < FAST_S


def test_a_body_over_the_route_limit_is_413_before_it_is_sent(gateway: Gateway) -> None:
    bearer = f"Authorization: Bearer {TOKEN}\r\n".encode()
    status, elapsed = _announce(gateway.port, b"/v1/compare", 200 * MiB, bearer)
    assert status == 413 and elapsed < FAST_S
    # a route that takes no image is small: 1 MiB is already too much for a video call
    status, _ = _announce(gateway.port, b"/v1/calls", MiB, bearer)
    assert status == 413
    with gateway.client() as client:  # streamed without a length: cut off all the same
        response = client.post(
            "/v1/calls", content=iter([b" " * 65536] * 32), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413 and response.json()["code"] == "BODY_TOO_LARGE"


def _announce(port: int, path: bytes, length: int, extra: bytes) -> tuple[int, float]:
    """Send a POST's headers and 1 KiB of its body, then read the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: " + str(length).encode() + b"\r\n\r\n" + b" " * 1024
        )  # fmt: skip
        head = sock.recv(65536)
        elapsed = time.perf_counter() - started
    return int(head.split(b" ", 2)[1]), elapsed


def test_a_repeated_content_type_cannot_skip_the_checks(gateway: Gateway) -> None:
    """The route reads the first Content-Type (JSON), the old checks read the last (not JSON)."""
    nul = b'{"reference": "data:image/png;base64,\\u0000"}'
    deep = b'{"settings": ' + b"[" * 40 + b"]" * 40 + b"}"
    with gateway.client() as client:
        for body in (nul, deep):
            twice = [("content-type", "application/json"), ("content-type", "text/plain")]
            response = client.post("/v1/sessions", content=body, headers=twice)
            assert response.status_code == 400 and response.json()["code"] == "DUPLICATE_HEADER"
        # one Content-Type that is not JSON: the body is scanned all the same
        response = client.post("/v1/sessions", content=nul, headers={"content-type": "text/plain"})
        assert response.status_code == 400 and response.json()["code"] == "INVALID_CHARACTER"
        response = client.post("/v1/sessions", content=deep, headers={"content-type": "text/plain"})
        assert response.status_code == 400 and response.json()["code"] == "JSON_TOO_DEEP"


def _jpeg_b64(size: int) -> str:
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 64).convert("RGB").save(buffer, format="JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode()


def test_honest_requests_still_pass_the_guard(gateway: Gateway) -> None:
    """Two large images reach the matcher's queue (no matcher here: 504), a session with its
    reference is created, and the browser's offer with its client token reaches the call agents'."""
    image = _jpeg_b64(1600)
    assert len(image) > MiB
    with gateway.client() as client:
        compared = client.post("/v1/compare", json={"source": image, "target": image})
        assert compared.status_code == 504 and compared.json()["code"] == "MATCHER_TIMEOUT", compared.text
        created = client.post("/v1/sessions", json={"reference": f"data:image/jpeg;base64,{image}"})
        assert created.status_code == 201, created.text
    # each charged once (by the guard, before the body; not again by the route)
    assert int(compared.headers["X-Quota-Remaining"]) - int(created.headers["X-Quota-Remaining"]) == 1
    session = created.json()
    with gateway.client(session["clientToken"]) as browser:
        offer = browser.post(
            f"/v1/sessions/{session['sessionId']}/offer", json={"sdp": "v=0\r\n", "type": "offer"}
        )
        assert offer.status_code == 504 and offer.json()["code"] == "CALL_AGENT_TIMEOUT", offer.text


def test_headers_past_the_limit_are_refused_without_being_held(gateway: Gateway) -> None:
    """httptools read a header of any size into memory (one 200 MiB header: 280 MB, then 200 OK);
    the server now refuses the request once its head passes 32 KiB and closes the connection."""
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ")
            for _ in range(256):  # 16 MiB, if the server took it all
                sock.sendall(b"a" * 65536)
                sent += 65536
            sock.sendall(b"\r\n\r\n")
            answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            with contextlib.suppress(OSError):
                answer = sock.recv(65536)
    assert sent < 16 * MiB, "the gateway read 16 MiB of headers"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200


def test_a_body_that_trickles_in_is_cut_off_at_the_body_timeout(gateway: Gateway) -> None:
    """A client sending its body a byte at a time held the connection and its buffer for ever."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=BODY_TIMEOUT_S + 10) as sock:
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode() + b"Content-Length: 1000\r\n\r\n{"
        )  # fmt: skip
        started = time.monotonic()
        sock.settimeout(0.5)
        head = b""
        while not head and time.monotonic() - started < BODY_TIMEOUT_S + 10:
            with contextlib.suppress(TimeoutError):
                sock.sendall(b" ")
                head = sock.recv(65536)
        elapsed = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert b"REQUEST_TIMEOUT" in head
    assert BODY_TIMEOUT_S - 0.5 <= elapsed < BODY_TIMEOUT_S + 5


def test_connections_past_the_limit_are_answered_503_and_the_gateway_recovers(gateway: Gateway) -> None:
    """Idle half-sent requests held a file descriptor each without bound; past
    FACEPROOF_MAX_CONNECTIONS a request is answered 503 at once instead."""
    held = [socket.create_connection(("127.0.0.1", gateway.port), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        time.sleep(0.5)
        started = time.perf_counter()
        refused = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert refused.status_code == 503 and time.perf_counter() - started < FAST_S
    finally:
        for sock in held:
            sock.close()
    for _ in range(50):
        if httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200:
            break
        time.sleep(0.1)
    assert httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200


def test_a_small_body_of_many_values_is_refused_before_it_is_parsed(gateway: Gateway) -> None:
    """28 MiB of ``[{},{},...`` parsed into 9.8 million dicts: 715 MB and 0.6 s per request, then a
    422. The guard's scan counts the values first."""
    body = b"[" + b"{}," * (8 * MiB // 3) + b"{}]"
    prober = _Prober(gateway.url)
    prober.start()
    with gateway.client() as client:
        started = time.perf_counter()
        response = client.post("/v1/compare", content=body, headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - started
    answers = prober.stop()
    assert response.status_code == 400 and response.json()["code"] == "JSON_TOO_MANY_VALUES", response.text
    assert elapsed < 5 * FAST_S
    assert answers and all(status == 200 for status, _ in answers), answers


def test_an_address_that_keeps_failing_to_authenticate_is_throttled_before_any_lookup(
    gateway: Gateway,
) -> None:
    """Every made-up API key (``fp_...``) or client token cost a database query, and the rate
    limits are charged only to callers who authenticated: a flood from one address took the pool's
    connections until every client got 503. Past FACEPROOF_FAILED_LOGINS_BURST (20) failures the
    address gets 429 at once, the static token still works, and the address recovers."""
    statuses = []
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for n in range(30):
            fake = {"Authorization": f"Bearer fp_made-up-key-{n:04d}{'x' * 30}"}
            statuses.append(client.get("/v1/sessions/some-session", headers=fake).status_code)
        throttled = client.get("/v1/sessions/some-session/status", headers={"Authorization": "Bearer any"})
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}, statuses
    assert throttled.status_code == 429 and throttled.json()["code"] == "AUTHENTICATION_THROTTLED"
    assert int(throttled.headers["Retry-After"]) >= 1
    with gateway.client() as client:  # the static token is no lookup: still answered
        assert client.get("/v1/sessions/none").status_code == 404
    time.sleep(2.5)  # a failure back every second
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        again = client.get(
            "/v1/sessions/some-session", headers={"Authorization": "Bearer fp_again" + "x" * 40}
        )
    assert again.status_code == 401
