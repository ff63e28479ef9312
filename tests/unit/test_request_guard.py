"""The request guard (services/gateway/limits.py) as an ASGI app: what it answers before the body is
read, the body rules against the gateway's own routes, and one reading of the headers. The attack
against the running gateway is tests/integration/test_gateway_guard.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Scope

from infra.db.errors import DatabaseUnavailable
from infra.settings import Settings
from services.gateway.app import create_app
from services.gateway.auth import Authenticator, Principal, remembered_principal
from services.gateway.body_rules import Auth, BodyRules, image_field_bytes
from services.gateway.limits import RequestGuard
from services.gateway.problems import ProblemError

SETTINGS = Settings()
MiB = 1024 * 1024


class _Keys:
    async def authenticate(self, key: str) -> None:
        return None  # no API key is valid; only the static token below


AUTHENTICATOR = Authenticator(_Keys(), "static-token")


async def _admit(_: Scope, authorization: str | None) -> Principal:
    return await AUTHENTICATOR(authorization)


class _App:
    """The app behind the guard: records the body it got and the caller the guard kept."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.principal: Principal | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        message = await receive()
        self.body = message.get("body", b"")
        self.principal = remembered_principal(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes] | None,
    admit: Any = _admit,
) -> tuple[int, dict[str, Any], _App, int]:
    """Run one request through the guard; ``chunks=None``: reading the body fails the test."""
    app = _App()
    guard = RequestGuard(
        app, rules=BodyRules(SETTINGS), max_depth=8, admit=admit, body_timeout_s=5, max_values=1000
    )
    pending = list(chunks) if chunks is not None else None
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        if pending is None:
            raise AssertionError("the guard read the body")
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(message.get("body", b"") for message in sent[1:])
    answer = json.loads(payload) if status != 200 else {}
    return status, answer, app, reads


def test_a_database_that_cannot_be_reached_while_admitting_the_caller_answers_503() -> None:
    """The key and the rate limit are rows in Postgres: while it restarts, the guard answers what
    every route answers then (503 DATABASE_UNAVAILABLE, Retry-After), never a 500 (the compose
    stack's Postgres restart under load answered 500, tests/e2e/test_compose_stack_e2e.py)."""

    async def database_down(_: Scope, authorization: str | None) -> Principal:
        raise DatabaseUnavailable("connection refused")

    status, answer, app, reads = _call(
        "POST", "/v1/compare", [(b"authorization", b"Bearer static-token")], None, admit=database_down
    )
    assert status == 503 and answer["code"] == "DATABASE_UNAVAILABLE", answer
    assert app.body is None and reads == 0  # nothing read, nothing passed on


BEARER = (b"authorization", b"Bearer static-token")
JSON = (b"content-type", b"application/json")


def test_no_valid_api_key_is_a_401_before_the_body_is_read() -> None:
    for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"Basic x")]):
        status, answer, app, _ = _call("POST", "/v1/compare", [JSON, *headers], chunks=None)
        assert (status, answer["code"], app.body) == (401, "UNAUTHORIZED", None)


def test_a_refusal_of_the_admission_is_answered_before_the_body_is_read() -> None:
    """The rate limit is charged with the key (services.gateway.dependencies.admit): a 429 too."""

    async def over_limit(_: Scope, __: str | None) -> Principal:
        raise ProblemError(
            429, "Too many requests", "Slow down.", code="RATE_LIMITED", headers={"Retry-After": "9"}
        )

    app = _App()
    guard = RequestGuard(
        app, rules=BodyRules(SETTINGS), max_depth=8, admit=over_limit, body_timeout_s=5, max_values=1000
    )
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the guard read the body")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/verify", "query_string": b"", "headers": [BEARER]}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 429 and (b"retry-after", b"9") in sent[0]["headers"]


def test_the_browser_route_needs_a_bearer_before_its_body() -> None:
    status, answer, _, _ = _call("POST", "/v1/sessions/s-1/offer", [JSON], chunks=None)
    assert (status, answer["code"]) == (401, "UNAUTHORIZED")
    # with a bearer the body is read (the route checks the token against the session)
    status, _, app, _ = _call("POST", "/v1/sessions/s-1/offer", [JSON, BEARER], chunks=[b"{}"])
    assert status == 200 and app.body == b"{}"


def test_the_authenticated_caller_is_kept_for_the_route() -> None:
    status, _, app, _ = _call("POST", "/v1/compare", [JSON, BEARER], chunks=[b'{"a":', b" 1}"])
    assert status == 200 and app.body == b'{"a": 1}'
    assert app.principal is not None and app.principal.owner == "static"


def test_a_declared_length_over_the_route_limit_is_a_413_before_reading() -> None:
    limit = BodyRules(SETTINGS).rule("POST", "/v1/calls").limit
    headers = [JSON, BEARER, (b"content-length", str(limit + 1).encode())]
    status, answer, _, _ = _call("POST", "/v1/calls", headers, chunks=None)
    assert (status, answer["code"]) == (413, "BODY_TOO_LARGE")


def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    limit = BodyRules(SETTINGS).default.limit
    chunks = [b" " * 4096] * (limit // 4096 + 50)
    status, answer, _, reads = _call("POST", "/anything", [JSON], chunks=chunks)
    assert (status, answer["code"]) == (413, "BODY_TOO_LARGE")
    assert reads == limit // 4096 + 1  # not one chunk more than needed to know


@pytest.mark.parametrize("name", [b"content-type", b"content-length", b"authorization", b"transfer-encoding"])
def test_a_repeated_header_is_refused(name: bytes) -> None:
    """Starlette reads the first copy, dict(scope["headers"]) the last: one reading only."""
    headers = [BEARER, JSON, (name, b"application/json"), (name, b"text/plain")]
    if name == b"authorization":
        headers = [JSON, BEARER, BEARER]
    status, answer, _, _ = _call("POST", "/v1/compare", headers, chunks=None)
    assert (status, answer["code"]) == (400, "DUPLICATE_HEADER")


def test_every_body_is_scanned_whatever_its_content_type() -> None:
    deep = b"[" * 20 + b"]" * 20
    for content_type in (b"text/plain", b"application/json", b"application/x-anything"):
        headers = [BEARER, (b"content-type", content_type)]
        status, answer, _, _ = _call("POST", "/v1/compare", headers, chunks=[deep])
        assert (status, answer["code"]) == (400, "JSON_TOO_DEEP")
    status, answer, _, _ = _call("POST", "/v1/compare", [BEARER], chunks=[b'["\\u0000"]'])
    assert (status, answer["code"]) == (400, "INVALID_CHARACTER")


# --------------------------------------------------------------------------- rules vs routes


def _operations_with_a_body() -> set[tuple[str, str]]:
    paths = create_app(SETTINGS).openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }


def test_every_route_that_takes_a_body_has_a_rule_and_every_rule_a_route() -> None:
    listed = set(BodyRules(SETTINGS).listed())
    assert listed == _operations_with_a_body()


def test_limits_are_sized_to_what_each_route_takes() -> None:
    rules = BodyRules(SETTINGS).listed()
    image = image_field_bytes(SETTINGS)
    small = SETTINGS.max_small_body_bytes
    assert rules[("POST", "/v1/compare")].limit == 2 * image + small < SETTINGS.max_body_bytes
    assert rules[("POST", "/v1/sessions")].limit == image + small
    assert rules[("POST", "/v1/verify")].limit == SETTINGS.max_body_bytes  # 11 images: the ceiling
    assert rules[("POST", "/v1/calls")].limit == small == 64 * 1024
    assert rules[("POST", "/v1/sessions/{session_id}/offer")].limit <= 256 * 1024
    assert BodyRules(SETTINGS).rule("GET", "/v1/admin/usage").limit == small
    # a base64 image at the byte limit, as a data URL with MIME line breaks, fits its field
    base64_chars = 4 * -(-SETTINGS.max_image_bytes // 3)
    lines = ["A" * 76] * (base64_chars // 76 + 1)
    assert len(json.dumps("data:image/jpeg;base64," + "\r\n".join(lines))) < image
    assert {rule.auth for key, rule in rules.items() if "offer" not in key[1]} == {Auth.API_KEY}
    assert rules[("POST", "/v1/sessions/{session_id}/offer")].auth is Auth.CLIENT_TOKEN


def test_a_path_parameter_is_one_segment() -> None:
    rules = BodyRules(SETTINGS)
    assert rules.rule("POST", "/v1/sessions/abc/offer").auth is Auth.CLIENT_TOKEN
    assert rules.rule("POST", "/v1/sessions/a/b/offer") is rules.default
    assert rules.rule("POST", "/v1/sessions").auth is Auth.API_KEY
    assert rules.rule("POST", "/v1/sessions/").auth is Auth.NONE
    assert rules.rule("GET", "/v1/compare") is rules.default
