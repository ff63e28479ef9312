"""The callback sender with httpx's MockTransport: the checked, pinned address and the original
Host, and a cap on how much of the controller's answer is read."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest

from infra.safe_fetch import FetchPolicy, IPAddress
from services.notifier.adapters import MAX_RESPONSE_BYTES, HttpCallbackSender
from services.notifier.ports import CallbackRefused

CHUNK = 8 * 1024


async def public_resolver(host: str, port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("93.184.216.34")]


class Endless(httpx.AsyncByteStream):
    """An answer that never ends (what a hostile controller streams back); counts what was read."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += CHUNK
            yield b"x" * CHUNK

    async def aclose(self) -> None:
        self.closed = True


async def test_an_endless_answer_is_read_up_to_the_cap_and_the_status_returned() -> None:
    answer = Endless()
    seen: list[httpx.Request] = []

    def controller(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=answer)

    sender = HttpCallbackSender(
        FetchPolicy(), timeout_s=5, transport=httpx.MockTransport(controller), resolve=public_resolver
    )
    try:
        status = await sender.put("https://controller.test/cb/failure/t%2F1", b"{}", {"X-A": "1"})
    finally:
        await sender.close()
    assert status == 200
    assert MAX_RESPONSE_BYTES <= answer.sent <= MAX_RESPONSE_BYTES + CHUNK
    assert answer.closed
    (request,) = seen
    assert request.method == "PUT" and request.content == b"{}" and request.headers["X-A"] == "1"
    assert request.url.host == "93.184.216.34"  # the checked address, no second lookup
    assert request.url.raw_path == b"/cb/failure/t%2F1"
    assert request.headers["Host"] == "controller.test"
    assert request.extensions["sni_hostname"] == "controller.test"


async def test_a_private_callback_address_is_refused_before_any_request() -> None:
    seen: list[httpx.Request] = []
    sender = HttpCallbackSender(
        FetchPolicy(),
        timeout_s=5,
        transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200)),
    )
    try:
        with pytest.raises(CallbackRefused, match="link-local"):
            await sender.put("http://169.254.169.254/cb/success/t", b"", {})
    finally:
        await sender.close()
    assert seen == []


async def test_no_connection_is_kept_from_one_callback_to_the_next() -> None:
    """Callbacks go to the checked address, with the name only in Host and SNI; httpx keys a kept
    connection by address, so one opened (and its certificate checked) for one controller's name
    carried the next callback for another name at the same address: behind a TLS front that routes
    by SNI, another client's signed callback reached the first controller."""
    connections = 0

    async def controller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                await writer.drain()

    async def loopback(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    server = await asyncio.start_server(controller, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = HttpCallbackSender(FetchPolicy.create("127.0.0.1"), timeout_s=5, resolve=loopback)
    try:
        for name in ("controller-a.example", "controller-b.example"):
            assert await sender.put(f"http://{name}:{port}/success/t", b"", {}) == 200
    finally:
        await sender.close()
        server.close()
    assert connections == 2
