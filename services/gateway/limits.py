"""Refuse request bodies over the size limit before they are read into memory, JSON nested too
deep, and NUL characters (which no text column or JSONB value can store) before any route runs."""

from __future__ import annotations

import json
import re

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.problems import MEDIA_TYPE


class BodySizeLimit:
    """ASGI middleware: 413 problem+json when a body is (or turns out to be) over ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large",
                "status": 413,
                "detail": f"The request body is over {self._max} bytes.",
                "code": "BODY_TOO_LARGE",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


#: ``\\u0000`` in a JSON string: the escape with an odd number of backslashes before the ``u``.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NUL_DETAIL = "NUL characters are not allowed in paths, query strings or JSON strings."


def has_nul(body: bytes) -> bool:
    """Whether a JSON body holds a NUL character (escaped, as JSON must, or raw)."""
    return b"\x00" in body or _NUL_ESCAPE.search(body) is not None


class NulCharacterGuard:
    """ASGI middleware: 400 problem+json (``INVALID_CHARACTER``) for a NUL character in the path or
    the query string. PostgreSQL refuses NUL in text, so it would otherwise fail deep in a query."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            await _problem(send, 400, "Invalid character", _NUL_DETAIL, "INVALID_CHARACTER")
            return
        await self._app(scope, receive, send)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (strings skipped), without parsing it:
    a regex in C drops the strings (images are long strings), numpy counts the brackets."""
    structure = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    if structure.size == 0:
        return 0
    steps = np.isin(structure, _OPEN).astype(np.int32) - np.isin(structure, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


class JsonDepthLimit:
    """ASGI middleware: 400 problem+json (``JSON_TOO_DEEP``) for a JSON body nested deeper than
    ``max_depth``, checked before the body is parsed into models. The body is read here (the size
    limit outside this middleware bounds it) and handed on unchanged."""

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self._app = app
        self._max = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self._app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").lower()
        if content_type and b"json" not in content_type:
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self._app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if json_depth(body) > self._max:
            await _problem(
                send,
                400,
                "JSON too deep",
                f"The JSON body is nested deeper than {self._max} levels.",
                "JSON_TOO_DEEP",
            )
            return
        if has_nul(body):
            await _problem(send, 400, "Invalid character", _NUL_DETAIL, "INVALID_CHARACTER")
            return
        await self._app(
            scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send
        )


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _problem(send: Send, status: int, title: str, detail: str, code: str) -> None:
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
