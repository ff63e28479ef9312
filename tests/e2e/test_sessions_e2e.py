"""Sessions are recorded in Postgres, idempotent per clientRequestToken, readable in both shapes."""

from __future__ import annotations

import io
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from tests.e2e.conftest import Stack
from tests.paths import PEOPLE
from tests.support.hosts import fullwidth
from tests.support.static_server import StaticServer, serving

pytestmark = pytest.mark.e2e


def test_create_and_read_a_session(stack: Stack) -> None:
    token = uuid.uuid4().hex
    with stack.client() as client:
        created = client.post(
            "/v1/sessions", json={"clientRequestToken": token, "settings": {"challenges": 2}}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] == "CREATED" and body["expiresAt"]
        again = client.post("/v1/sessions", json={"clientRequestToken": token})
        assert again.json()["sessionId"] == body["sessionId"]

        read = client.get(f"/v1/sessions/{body['sessionId']}").json()
        assert read["clientRequestToken"] == token and read["status"] == "CREATED"
        legacy = client.get(f"/session/{body['sessionId']}").json()
        assert legacy == {"clientRequestToken": token, "status": "CREATED", "comparisonResult": None}


@pytest.fixture
def image_server() -> Iterator[StaticServer]:
    """A reference image on 127.0.0.1 (the stack's allow-listed address)."""
    with serving((PEOPLE / "obama.jpg").read_bytes(), "image/jpeg") as server:
        yield server


def test_a_reference_url_whose_host_is_written_in_unicode_is_fetched_by_its_ascii_name(
    stack: Stack, image_server: StaticServer
) -> None:
    """Fullwidth letters name the same host to DNS: the fetch goes through the address policy as
    any other and sends the ASCII name (it was a 500: the Unicode name could not be a Host header);
    a name that is not a valid domain name is a 422 with the reason."""
    port, hosts = image_server.port, image_server.hosts
    with stack.client() as client:
        created = client.post(
            "/v1/sessions", json={"reference": f"http://{fullwidth('localhost')}:{port}/ref.jpg"}
        )
        assert created.status_code == 201, created.text
        assert hosts == [f"localhost:{port}"]
        invalid = client.post("/v1/sessions", json={"reference": "http://" + "é" * 70 + ".test/ref.jpg"})
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["code"] == "REFERENCE_URL_REFUSED" and "domain name" in invalid.json()["detail"]


def test_seed_session_route(stack: Stack) -> None:
    with stack.client() as client:
        created = client.post("/session", json={})
        assert created.status_code == 200
        session_id = created.json()["SessionId"]
        assert client.get(f"/v1/sessions/{session_id}").status_code == 200


def test_unknown_session_is_404(stack: Stack) -> None:
    with stack.client() as client:
        for path in ("/v1/sessions/nope", "/session/nope"):
            response = client.get(path)
            assert response.status_code == 404 and response.json()["code"] == "SESSION_NOT_FOUND"


def test_probes_and_docs(stack: Stack) -> None:
    with stack.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/compare", "/compare", "/v1/sessions", "/session", "/healthz", "/readyz"} <= set(paths)


def many_chunk_png(size: int) -> bytes:
    """A valid 8x8 PNG grown to ``size`` bytes with empty text chunks before and after its pixels:
    each chunk is 12 bytes that Pillow walks in Python (about a second of CPU for 8 MiB)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(buffer, "PNG")
    png = buffer.getvalue()
    empty_text = struct.pack(">I", 0) + b"tEXt" + struct.pack(">I", zlib.crc32(b"tEXt"))
    half = (size - len(png)) // len(empty_text) // 2
    header, pixels, end = png[:33], png[33:-12], png[-12:]  # signature + IHDR, IDAT, IEND
    return header + empty_text * half + pixels + empty_text * half + end


def test_reference_images_that_take_seconds_to_read_never_stall_the_gateway(stack: Stack) -> None:
    """The attack: sessions whose reference URL serves an 8 MiB PNG of 700,000 empty chunks. Reading
    it took Pillow about a second on the gateway's event loop, so a few such requests stalled every
    other client; the image is checked on a worker thread now, and the gateway keeps answering."""
    with (
        serving(many_chunk_png(8 * 1024 * 1024), "image/png") as server,
        stack.client() as client,
        stack.client() as prober,
        ThreadPoolExecutor(3) as pool,
    ):
        creations = [
            pool.submit(client.post, "/v1/sessions", json={"reference": f"{server.url}/ref{i}.png"})
            for i in range(3)
        ]
        probes: list[float] = []
        while not all(creation.done() for creation in creations):
            started = time.monotonic()
            assert prober.get("/readyz").status_code == 200
            probes.append(time.monotonic() - started)
        answers = [creation.result() for creation in creations]
    assert [answer.status_code for answer in answers] == [201, 201, 201], answers[0].text
    # before: one probe waited out all three reads (3.7 s); the reading threads still share the GIL
    # with the event loop (Pillow walks the chunks in Python): up to 0.5 s seen on a busy machine
    assert len(probes) >= 3 and max(probes) < 1.5, probes
