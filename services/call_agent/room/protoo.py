"""A protoo client: JSON requests, responses and notifications over one WebSocket.

protoo (the signalling of mediasoup-demo) frames every message as JSON text:

- request ``{"request": true, "id": N, "method": "...", "data": {...}}``
- response ``{"response": true, "id": N, "ok": true, "data": {...}}`` or
  ``{"response": true, "id": N, "ok": false, "errorCode": N, "errorReason": "..."}``
- notification ``{"notification": true, "method": "...", "data": {...}}``

Both sides send requests. Every request we send has a deadline; a request from the server is
answered with what ``on_request`` returns (``ok: false`` when it raises :class:`RoomError`).
When the socket closes under us, pending requests fail with :class:`SocketDropped` and
:attr:`ProtooClient.dropped` is set.

The room URL comes from the caller, so opening it follows the safe fetcher's address policy
(infra/safe_fetch.py, the same allow-list setting): the host is resolved once and every address
checked (private, loopback, link-local ... refused unless allow-listed), the TCP connection goes to
the checked address while the handshake's ``Host`` and the TLS SNI keep the name, no proxy is used,
and redirects are followed by hand (at most ``max_redirects``), each target checked again.

The socket is opened without permessage-deflate and takes messages of at most
:data:`MAX_MESSAGE_BYTES` (a larger one closes it, 1009: the call fails with SOCKET_DROPPED).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from infra.safe_fetch import (
    WEBSOCKET_SCHEMES,
    FetchError,
    FetchPolicy,
    Resolver,
    Target,
    UrlRefused,
    check_url,
    resolve_host,
)
from services.call_agent.room.errors import (
    RequestRejected,
    RequestTimeout,
    RoomError,
    RoomRefused,
    RoomUnreachable,
    SignallingError,
    SocketDropped,
)

__all__ = ["SUBPROTOCOL", "Data", "ProtooClient"]

log = logging.getLogger("faceproof.call_agent.room")

SUBPROTOCOL = "protoo"
#: Larger than any protoo message of a mediasoup room many times over (SDP-free JSON; the largest,
#: getRouterRtpCapabilities' answer, is a few KB), small enough that parsing one on the event loop
#: the calls share stays short. The socket is opened without compression (permessage-deflate):
#: websockets applies this limit after decompression, so a ~1 KB frame could inflate into it.
MAX_MESSAGE_BYTES = 256 * 1024

Data = dict[str, Any]
RequestHandler = Callable[[str, Data], Awaitable[Data]]
NotificationHandler = Callable[[str, Data], None]


async def _no_request(method: str, data: Data) -> Data:
    raise SignallingError(f"unexpected request {method[:64]}")


def _ignore(method: str, data: Data) -> None:
    return None


_REDIRECTS = (301, 302, 303, 307, 308)


class _PinnedConnect(connect):
    """websockets' ``connect`` that never follows a redirect itself (we check each target)."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


class ProtooClient:
    """One protoo peer connection. Create, set the handlers, :meth:`connect`, then :meth:`request`."""

    def __init__(
        self,
        *,
        policy: FetchPolicy,
        request_timeout_s: float,
        open_timeout_s: float = 10.0,
        resolve: Resolver = resolve_host,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self.open_timeout_s = open_timeout_s
        self._policy = policy
        self._resolve = resolve
        self.on_request: RequestHandler = _no_request
        self.on_notification: NotificationHandler = _ignore
        #: Set when the socket closed without us closing it.
        self.dropped = asyncio.Event()
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Data]]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._next_id = random.randint(1, 10_000_000)
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self.dropped.is_set() and not self._closing

    async def connect(self, url: str) -> None:
        """Open the socket (subprotocol ``protoo``) under the address policy.

        Raises :class:`RoomRefused` (the policy refuses the URL or a redirect target) or
        :class:`RoomUnreachable`."""
        try:
            async with asyncio.timeout(self.open_timeout_s):
                socket = await self._open(url)
        except TimeoutError:
            raise RoomUnreachable("cannot open the room socket (TimeoutError)") from None
        if socket.subprotocol != SUBPROTOCOL:
            await socket.close()
            raise RoomUnreachable("the room socket does not speak protoo")
        self._socket = socket
        self._reader = asyncio.create_task(self._read(socket), name="protoo-reader")

    async def _open(self, url: str) -> ClientConnection:
        current = url
        for _hop in range(self._policy.max_redirects + 1):
            target = await self._check(current)
            try:
                return await _PinnedConnect(
                    current,  # the handshake's Host header keeps the name
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    open_timeout=self.open_timeout_s,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,  # no permessage-deflate: see MAX_MESSAGE_BYTES
                    ping_interval=10,
                    ping_timeout=10,
                    proxy=None,
                    host=str(target.pinned),  # the checked address: no second DNS lookup
                    port=target.port,
                    server_hostname=target.host if target.secure else None,  # TLS: SNI and cert
                )
            except InvalidStatus as error:
                response = error.response
                location = response.headers.get("Location")
                if response.status_code not in _REDIRECTS or not location:
                    raise RoomUnreachable(f"the room answered HTTP {response.status_code}") from None
                current = urljoin(current, location)
            except InvalidURI:
                raise RoomUnreachable("the room URL is not a WebSocket URL") from None
            except (OSError, InvalidHandshake) as error:
                raise RoomUnreachable(f"cannot open the room socket ({type(error).__name__})") from None
        raise RoomRefused(f"the room redirected more than {self._policy.max_redirects} times")

    async def _check(self, url: str) -> Target:
        try:
            return await check_url(url, self._policy, self._resolve, schemes=WEBSOCKET_SCHEMES)
        except UrlRefused as error:
            raise RoomRefused(f"the room URL is refused: {error.reason}") from None
        except FetchError as error:
            raise RoomUnreachable(f"cannot open the room socket ({error})") from None

    async def request(self, method: str, data: Data | None = None, *, timeout_s: float | None = None) -> Data:
        """Send a request and wait for its response's ``data``.

        Raises :class:`RequestTimeout`, :class:`RequestRejected` or :class:`SocketDropped`.
        """
        socket = self._socket
        if socket is None or self.dropped.is_set() or self._closing:
            raise SocketDropped(f"{method}: the room socket is closed")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Data] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        message = {"request": True, "id": request_id, "method": method, "data": data or {}}
        try:
            await socket.send(json.dumps(message))
            async with asyncio.timeout(self.request_timeout_s if timeout_s is None else timeout_s):
                return await future
        except TimeoutError:
            raise RequestTimeout(f"{method}: no response in time") from None
        except ConnectionClosed:
            raise SocketDropped(f"{method}: the room socket closed") from None
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, data: Data | None = None) -> None:
        socket = self._socket
        if socket is None or self.dropped.is_set():
            raise SocketDropped(f"{method}: the room socket is closed")
        try:
            await socket.send(json.dumps({"notification": True, "method": method, "data": data or {}}))
        except ConnectionClosed:
            raise SocketDropped(f"{method}: the room socket closed") from None

    async def close(self) -> None:
        """Close the socket (idempotent); pending requests fail with :class:`SocketDropped`."""
        self._closing = True
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # closing: how it ended is moot
                await self._reader
        for task in list(self._handlers):
            task.cancel()

    # ------------------------------------------------------------------ internals

    async def _read(self, socket: ClientConnection) -> None:
        try:
            async for raw in socket:
                self._dispatch(raw)
        except ConnectionClosed:
            pass
        finally:
            if not self._closing:
                log.warning("the room socket closed (code %s)", socket.close_code)
                self.dropped.set()
            for _, future in self._pending.values():
                if not future.done():
                    future.set_exception(SocketDropped("the room socket closed"))

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # (JSONDecodeError, bad UTF-8, an int of 4,300+ digits,
            # nested too deep): the room's text, not ours to fail on
            log.warning("ignoring a message that is not JSON")
            return
        if not isinstance(message, dict):
            log.warning("ignoring a message that is not a JSON object")
            return
        data = message.get("data")
        data = data if isinstance(data, dict) else {}
        if message.get("response") is True:
            self._on_response(message, data)
        elif message.get("request") is True and isinstance(message.get("method"), str):
            task = asyncio.create_task(self._answer(message.get("id"), message["method"], data))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        elif message.get("notification") is True and isinstance(message.get("method"), str):
            self.on_notification(message["method"], data)
        else:
            log.warning("ignoring a message that is no protoo message")

    def _on_response(self, message: dict[str, Any], data: Data) -> None:
        request_id = message.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None or pending[1].done():
            return
        method, future = pending
        if message.get("ok") is True:
            future.set_result(data)
        else:
            code = message.get("errorCode")
            reason = message.get("errorReason")
            future.set_exception(
                RequestRejected(
                    method, code if isinstance(code, int) else 500, reason if isinstance(reason, str) else ""
                )
            )

    async def _answer(self, request_id: object, method: str, data: Data) -> None:
        response: dict[str, Any]
        try:
            result = await self.on_request(method, data)
        except RoomError as error:
            response = {
                "response": True,
                "id": request_id,
                "ok": False,
                "errorCode": 500,
                "errorReason": error.detail,
            }
        else:
            response = {"response": True, "id": request_id, "ok": True, "data": result}
        socket = self._socket
        if socket is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await socket.send(json.dumps(response))
