"""The gateway's first look at a request, before any route runs (docs/security.md, "Input limits").

One ASGI middleware, :class:`RequestGuard`, in this order:

1. the headers, read once: a repeated ``Content-Type``, ``Content-Length``, ``Transfer-Encoding``
   or ``Authorization`` is refused (400 ``DUPLICATE_HEADER``), so no check and no route can each
   read a different copy;
2. a NUL character in the path or the query string: 400 ``INVALID_CHARACTER``;
3. the caller, before a byte of the body is read: on the routes that take an API key, the key
   (401) and the client's rate limit and quota (429; 503 ``DATABASE_UNAVAILABLE`` while Postgres,
   which holds them, cannot be reached), and the
   :class:`~services.gateway.auth.Principal` is kept for the route; a bearer token at all on the
   browser's routes;
4. the route's body limit (:mod:`services.gateway.body_rules`): 413 ``BODY_TOO_LARGE`` from a
   declared ``Content-Length``, or as soon as the bytes read pass it; 408 ``REQUEST_TIMEOUT`` when
   the whole body has not arrived within ``FACEPROOF_BODY_TIMEOUT_S``;
5. one linear scan of the body (:mod:`services.intake.json_scan`), off the event loop when the
   body is large: 400 ``JSON_TOO_DEEP``, 400 ``INVALID_CHARACTER``, 400 ``JSON_TOO_MANY_VALUES``
   (every body, whatever its ``Content-Type``).

The body is then handed on unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.db.errors import DatabaseUnavailable
from services.gateway.auth import Principal, remember_principal
from services.gateway.body_rules import Auth, BodyRules
from services.gateway.client_tokens import bearer_token, client_unauthorized
from services.gateway.json_body import OFFLOAD_ABOVE_BYTES
from services.gateway.problems import ProblemError, database_unavailable, problem_response
from services.intake.json_scan import JsonScan, json_depth, scan_json

#: json_depth: re-exported for the callers that check a body's depth alone.
__all__ = ["MAX_HEADER_BYTES", "SINGLE_HEADERS", "RequestGuard", "json_depth"]

#: Headers a request may carry once.
SINGLE_HEADERS: Final = frozenset(
    {b"content-type", b"content-length", b"transfer-encoding", b"authorization"}
)
NUL_DETAIL: Final = "NUL characters are not allowed in paths, query strings or JSON strings."
#: The request line and headers together at most (the server refuses more with 400: faceproof/cli.py).
MAX_HEADER_BYTES: Final = 32 * 1024

#: Authenticates the ``Authorization`` header and charges the caller's rate limit (ProblemError).
Admit = Callable[[Scope, str | None], Awaitable[Principal]]


class RequestGuard:
    """ASGI middleware: see the module's doc. ``admit`` is the gateway's
    :func:`services.gateway.dependencies.admit` (the same as the routes' own)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: BodyRules,
        max_depth: int,
        admit: Admit,
        body_timeout_s: float,
        max_values: int,
    ) -> None:
        self._app = app
        self._rules = rules
        self._max_depth = max_depth
        self._max_values = max_values
        self._admit = admit
        self._body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            body = await self._check(scope, receive)
        except ProblemError as error:
            await problem_response(error.problem, error.headers)(scope, receive, send)
            return
        except DatabaseUnavailable as error:  # the key's and the rate limit's rows are in Postgres
            await database_unavailable(scope["method"], scope["path"], error)(scope, receive, send)
            return
        if body is None:  # the client went away before sending its body
            await self._app(scope, _replay([{"type": "http.disconnect"}]), send)
            return
        await self._app(scope, _replay([{"type": "http.request", "body": body}], receive), send)

    async def _check(self, scope: Scope, receive: Receive) -> bytes | None:
        headers = _single_headers(scope)
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            raise _invalid_character()
        rule = self._rules.rule(scope["method"], scope["path"])
        authorization = headers.get(b"authorization")
        credentials = None if authorization is None else authorization.decode("latin-1")
        if rule.auth is Auth.API_KEY:
            remember_principal(scope, await self._admit(scope, credentials))
        elif rule.auth is Auth.CLIENT_TOKEN and bearer_token(credentials) is None:
            raise client_unauthorized()
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ProblemError(
                    400, "Invalid header", "Content-Length is not a number.", code="INVALID_HEADER"
                )
            if int(declared) > rule.limit:
                raise _too_large(rule.limit)
        try:
            async with asyncio.timeout(self._body_timeout_s):  # not wait_for: docs/reliability.md
                body = await _read_body(receive, rule.limit)
        except TimeoutError:
            raise ProblemError(
                408,
                "Request timeout",
                f"The request body did not arrive within {self._body_timeout_s:g} s.",
                code="REQUEST_TIMEOUT",
            ) from None
        if body is None:
            return None
        scan = await self._scan(body)
        if scan.depth > self._max_depth:
            raise ProblemError(
                400,
                "JSON too deep",
                f"The JSON body is nested deeper than {self._max_depth} levels.",
                code="JSON_TOO_DEEP",
            )
        if scan.nul:
            raise _invalid_character()
        if scan.values > self._max_values:
            raise ProblemError(
                400,
                "JSON too large",
                f"The JSON body holds more than {self._max_values} values.",
                code="JSON_TOO_MANY_VALUES",
            )
        return body

    async def _scan(self, body: bytes) -> JsonScan:
        if len(body) > OFFLOAD_ABOVE_BYTES:
            return await asyncio.to_thread(scan_json, body, stop_above=self._max_depth)
        return scan_json(body, stop_above=self._max_depth)


def _single_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name; a repeated :data:`SINGLE_HEADERS` one is a 400."""
    seen: dict[bytes, bytes] = {}
    for raw_name, value in scope["headers"]:
        name = raw_name.lower()
        if name in seen and name in SINGLE_HEADERS:
            raise ProblemError(
                400,
                "Duplicate header",
                f"The request has more than one {name.decode('latin-1')} header.",
                code="DUPLICATE_HEADER",
            )
        seen.setdefault(name, value)
    return seen


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or 413 as soon as it passes ``limit``; ``None`` if the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413, "Request too large", f"The request body is over {limit} bytes.", code="BODY_TOO_LARGE"
    )


def _invalid_character() -> ProblemError:
    return ProblemError(400, "Invalid character", NUL_DETAIL, code="INVALID_CHARACTER")
