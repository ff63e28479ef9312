"""HttpCallbackSender over httpx.MockTransport: what the handlers get back for each way a
controller can answer (a status, a dropped connection, silence, a redirect)."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from infra.safe_fetch import FetchFailed, FetchPolicy, IPAddress
from services.notifier.adapters import HttpCallbackSender
from services.notifier.ports import CallbackUnreachable

URL = "https://controller.test/cb/success/t"


async def public(host: str, port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("93.184.216.34")]


async def nowhere(host: str, port: int) -> list[IPAddress]:
    raise FetchFailed(f"cannot resolve {host!r}")


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    """A streamed answer, as a real connection gives it."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(b"ok"))


async def put(handler: httpx.MockTransport, *, timeout_s: float = 5) -> int:
    sender = HttpCallbackSender(FetchPolicy(), timeout_s=timeout_s, transport=handler, resolve=public)
    try:
        return await sender.put(URL, b"{}", {})
    finally:
        await sender.close()


@pytest.mark.parametrize("status", [204, 404, 503])
async def test_the_controllers_status_is_returned_as_it_is(status: int) -> None:
    assert await put(httpx.MockTransport(lambda request: answer(status))) == status


async def test_a_redirect_is_not_followed() -> None:
    seen: list[httpx.Request] = []

    def controller(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(307, headers={"Location": "http://169.254.169.254/"})

    assert await put(httpx.MockTransport(controller)) == 307
    assert len(seen) == 1


async def test_a_dropped_connection_is_unreachable() -> None:
    def controller(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(CallbackUnreachable, match=r"cannot reach controller\.test: ConnectError"):
        await put(httpx.MockTransport(controller))


async def test_a_silent_controller_is_unreachable_after_the_time_limit() -> None:
    async def controller(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    with pytest.raises(CallbackUnreachable, match=r"did not answer within 0\.2 s"):
        await put(httpx.MockTransport(controller), timeout_s=0.2)


async def test_a_name_that_does_not_resolve_is_unreachable_not_refused() -> None:
    sender = HttpCallbackSender(
        FetchPolicy(),
        timeout_s=5,
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        resolve=nowhere,
    )
    try:
        with pytest.raises(CallbackUnreachable):
            await sender.put(URL, b"", {})
    finally:
        await sender.close()


async def test_a_slow_lookup_counts_against_the_same_time_limit() -> None:
    """The attempt must end well within its lease (else the sweeper sends the next one while this
    one still runs: a second callback); the lookup and the PUT share the one limit."""
    seen: list[httpx.Request] = []

    async def slow(host: str, port: int) -> list[IPAddress]:
        await asyncio.sleep(5)
        return await public(host, port)

    sender = HttpCallbackSender(
        FetchPolicy(),
        timeout_s=0.2,
        transport=httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(200)),
        resolve=slow,
    )
    try:
        with pytest.raises(CallbackUnreachable, match=r"not resolved within 0\.2 s"):
            await sender.put(URL, b"", {})
    finally:
        await sender.close()
    assert seen == []  # nothing was sent
