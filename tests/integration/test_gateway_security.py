"""Security through the real gateway app on real Postgres and RabbitMQ (a throw-away vhost):
rate limits and quotas shared by two app instances (replicas), the admin usage route, the
lockout of failing subjects, the JSON depth limit, and authentication of every route (enumerated
from the app, so a new route is covered automatically)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from contracts.documents import SessionSettingsDocument
from domain.limits import Limits, LockoutPolicy, lockout_subjects
from infra.db.engine import create_engine, session_factory
from infra.db.repositories import ApiClientRepository
from infra.db.security import LivenessFailures, RateLimitRepository
from infra.settings import Settings
from services.gateway.app import create_app
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.integration

#: Routes anyone may call: probes, the API documents, the hosted page and its files (/metrics is
#: not on the API port: FACEPROOF_METRICS_PORT).
PUBLIC = {
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/v1/sessions/client.js",
    "/v1/sessions/page.js",
    "/v1/sessions/client.css",
    "/v1/sessions/{session_id}/client",
}
#: Routes authenticated by a session's client token (not an API key).
CLIENT_TOKEN = {"/v1/sessions/{session_id}/offer", "/v1/sessions/{session_id}/status"}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Stack:
    a: TestClient
    b: TestClient  # a second replica on the same database
    database_url: str

    async def client(self, name: str, *, admin: bool = False, **limits: Any) -> tuple[str, str]:
        engine = create_engine(self.database_url)
        try:
            sessions = session_factory(engine)
            client, key = await ApiClientRepository(sessions).create(name, **limits)
            if admin:
                await RateLimitRepository(sessions).set_limits(client.id, admin=True)
        finally:
            await engine.dispose()
        return client.id, key

    def key(self, name: str, **kwargs: Any) -> tuple[str, dict[str, str]]:
        client_id, key = _run(self.client(name, **kwargs))
        return client_id, {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Stack]:
    with temporary_vhost() as vhost:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("gateway"),
            database_url=postgres_url,
            broker_url=vhost.url,
            api_token="static-token",
            static_burst=10_000,
            failed_logins_burst=10_000,  # its tests fail to authenticate on purpose, many times
            max_json_depth=8,
        )
        with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
            yield Stack(a, b, postgres_url)


def _compare_less(client: TestClient, headers: dict[str, str]) -> Any:
    """A cheap authenticated request (a session read: 404, but charged)."""
    return client.get("/v1/sessions/00000000-0000-0000-0000-000000000000", headers=headers)


# --------------------------------------------------------------------------- rate limits


def test_burst_then_429_with_headers_shared_by_replicas(stack: Stack) -> None:
    _, headers = stack.key("burst-client", rate_per_second=0.001, burst=4)
    answers = [_compare_less(client, headers) for client in (stack.a, stack.b, stack.a, stack.b)]
    assert [answer.status_code for answer in answers] == [404] * 4
    assert [answer.headers["RateLimit-Remaining"] for answer in answers] == ["3", "2", "1", "0"]
    assert answers[0].headers["RateLimit-Limit"] == answers[0].headers["X-RateLimit-Limit"] == "4"
    refused = _compare_less(stack.a, headers)  # the fifth, on either replica
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert _compare_less(stack.b, headers).status_code == 429


def test_bucket_refills_over_time(stack: Stack) -> None:
    client_id, _ = stack.key("refill-client")

    async def take_at(seconds: float) -> bool:
        engine = create_engine(stack.database_url)
        try:
            repository = RateLimitRepository(session_factory(engine))
            limits = Limits(rate_per_second=1.0, burst=2, monthly_quota=None)
            decision = await repository.take(client_id, limits, T0 + timedelta(seconds=seconds))
            return decision.allowed
        finally:
            await engine.dispose()

    assert [_run(take_at(0)), _run(take_at(0)), _run(take_at(0.1))] == [True, True, False]
    assert _run(take_at(1.2)) is True  # one token back after a second
    assert _run(take_at(1.3)) is False


T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_monthly_quota_exhausted(stack: Stack) -> None:
    _, headers = stack.key("quota-client", monthly_quota=2)
    first = _compare_less(stack.a, headers)
    assert first.headers["X-Quota-Limit"] == "2" and first.headers["X-Quota-Remaining"] == "1"
    assert _compare_less(stack.b, headers).status_code == 404
    refused = _compare_less(stack.a, headers)
    assert refused.status_code == 429 and refused.json()["code"] == "QUOTA_EXCEEDED"
    assert int(refused.headers["Retry-After"]) > 0


def test_public_routes_are_not_limited(stack: Stack) -> None:
    response = stack.a.get("/healthz")
    assert response.status_code == 200 and "RateLimit-Limit" not in response.headers


def test_admin_usage_needs_an_admin_key(stack: Stack) -> None:
    _, plain = stack.key("plain-client")
    refused = stack.a.get("/v1/admin/usage", headers=plain)
    assert refused.status_code == 403 and refused.json()["code"] == "ADMIN_REQUIRED"
    assert stack.a.get("/v1/admin/usage").status_code == 401
    _, admin = stack.key("admin-client", admin=True)
    _compare_less(stack.a, plain)
    rows = {row["name"]: row for row in stack.a.get("/v1/admin/usage", headers=admin).json()["clients"]}
    assert rows["plain-client"]["requests"] == 2  # the refused admin call and the read
    assert rows["plain-client"]["monthlyQuota"] == 100_000 and rows["plain-client"]["burst"] == 100
    assert rows["admin-client"]["admin"] is True
    one = stack.a.get("/v1/admin/usage", params={"client": "plain-client"}, headers=admin).json()
    assert [row["name"] for row in one["clients"]] == ["plain-client"]


# --------------------------------------------------------------------------- lockout


def test_lockout_after_failed_sessions_of_a_subject(stack: Stack) -> None:
    client_id, headers = stack.key("lockout-client")
    body = {"settings": {"subjectKey": "user-7", "deviceId": "phone-7"}}
    assert stack.a.post("/v1/sessions", json=body, headers=headers).status_code == 201

    async def fail(count: int, at: datetime) -> None:  # what the liveness worker records
        engine = create_engine(stack.database_url)
        try:
            failures = LivenessFailures(session_factory(engine))
            subjects = lockout_subjects(client_id, SessionSettingsDocument(subject_key="user-7"))
            for index in range(count):
                await failures.record(client_id, subjects, f"s-{index}", at)
        finally:
            await engine.dispose()

    now = datetime.now(UTC)
    _run(fail(4, now))
    assert stack.a.post("/v1/sessions", json=body, headers=headers).status_code == 201
    _run(fail(1, now))
    refused = stack.b.post("/v1/sessions", json=body, headers=headers)
    assert refused.status_code == 429 and refused.json()["code"] == "SUBJECT_LOCKED_OUT"
    assert 1700 <= int(refused.headers["Retry-After"]) <= 1800
    legacy = stack.a.post("/session", json={"settings": {"subjectKey": "user-7"}}, headers=headers)
    assert legacy.status_code == 429
    # the device alone is not locked; another subject is not; the same key of another client is not
    assert (
        stack.a.post("/v1/sessions", json={"settings": {"deviceId": "phone-7"}}, headers=headers).status_code
        == 201
    )
    assert (
        stack.a.post("/v1/sessions", json={"settings": {"subjectKey": "user-8"}}, headers=headers).status_code
        == 201
    )
    _, other = stack.key("lockout-other")
    assert (
        stack.a.post("/v1/sessions", json={"settings": {"subjectKey": "user-7"}}, headers=other).status_code
        == 201
    )

    async def locked_at(at: datetime) -> datetime | None:
        engine = create_engine(stack.database_url)
        try:
            failures = LivenessFailures(session_factory(engine))
            subjects = lockout_subjects(client_id, SessionSettingsDocument(subject_key="user-7"))
            return await failures.locked_until(subjects, at, LockoutPolicy(5, 180, 1800))
        finally:
            await engine.dispose()

    assert _run(locked_at(now + timedelta(seconds=1799))) is not None
    assert _run(locked_at(now + timedelta(seconds=1801))) is None  # the cool-down is over


# --------------------------------------------------------------------------- input limits


def test_json_nested_too_deep_is_refused_before_parsing(stack: Stack) -> None:
    _, headers = stack.key("deep-client")
    deep = '{"settings": ' + "[" * 20 + "]" * 20 + "}"
    response = stack.a.post(
        "/v1/sessions", content=deep, headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["code"] == "JSON_TOO_DEEP"
    assert response.headers["content-type"] == "application/problem+json"


# --------------------------------------------------------------------------- authentication


def _routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:  # FastAPI's lazily included routers
            context = getattr(route, "include_context", None)
            yield from _routes(original.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(route, APIRoute) or hasattr(route, "methods"):
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    yield method, prefix + route.path  # type: ignore[attr-defined]


def _call(client: TestClient, method: str, path: str, session_id: str, headers: dict[str, str]) -> Any:
    url = path.replace("{session_id}", session_id).replace("{flow_id}", session_id)
    body = {"sdp": "v=0\r\n", "type": "offer"} if path.endswith("/offer") else {}
    if method in ("POST", "PUT", "PATCH"):
        return client.request(method, url, json=body, headers=headers)
    return client.request(method, url, headers=headers)


def test_every_route_refuses_without_a_valid_token(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    owner_id, owner = stack.key("owner-client")
    _, revoked = stack.key("revoked-client")
    revoked_key = revoked["Authorization"].removeprefix("Bearer ")
    assert _compare_less(stack.a, revoked).status_code == 404  # works until revoked

    async def revoke() -> None:
        engine = create_engine(stack.database_url)
        try:
            assert await ApiClientRepository(session_factory(engine)).revoke("revoked-client")
        finally:
            await engine.dispose()

    _run(revoke())
    created = stack.a.post("/v1/sessions", json={}, headers=owner).json()
    session_id = created["sessionId"]
    _, intruder = stack.key("intruder-client")
    routes = sorted(set(_routes(list(stack.a.app.routes))))  # type: ignore[attr-defined]
    protected = [(method, path) for method, path in routes if path not in PUBLIC]
    assert ("POST", "/v1/compare") in protected and ("GET", "/v1/admin/usage") in protected
    for method, path in protected:
        for headers in ({}, revoked, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic x"}):
            answer = _call(stack.a, method, path, session_id, headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.json()["code"] == "UNAUTHORIZED"
        if path in CLIENT_TOKEN:  # the API key is not a client token, not even the owner's
            assert _call(stack.a, method, path, session_id, owner).status_code == 401, path
        elif "{session_id}" in path:
            answer = _call(stack.a, method, path, session_id, intruder)
            assert answer.status_code == 404, (method, path, answer.text)
    assert stack.a.get(f"/v1/sessions/{session_id}", headers=owner).status_code == 200
    for response_text in (created, stack.a.get(f"/v1/sessions/{session_id}", headers=owner).text):
        assert revoked_key not in str(response_text) and owner["Authorization"][7:] not in str(response_text)
    secrets = [revoked_key, owner["Authorization"][7:], intruder["Authorization"][7:], created["clientToken"]]
    assert not [secret for secret in secrets if secret in caplog.text]
    assert owner_id


def test_usage_listing_never_shows_keys(stack: Stack) -> None:
    _, headers = stack.key("listed-client", admin=True)
    key = headers["Authorization"][7:]
    listing = stack.a.get("/v1/admin/usage", headers=headers)
    assert listing.status_code == 200 and key not in listing.text and key[:12] not in listing.text


def test_static_token_counts_as_client_static(stack: Stack) -> None:
    static = {"Authorization": "Bearer static-token"}
    before = stack.a.get("/v1/admin/usage", params={"client": "static"}, headers=static).json()["clients"]
    after = stack.a.get("/v1/admin/usage", params={"client": "static"}, headers=static).json()["clients"]
    assert before[0]["name"] == "static" and after[0]["requests"] == before[0]["requests"] + 1


def test_keys_cli_sets_limits_and_shows_usage(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from faceproof.cli import app

    monkeypatch.setenv("FACEPROOF_DATABASE_URL", stack.database_url)
    monkeypatch.setenv("FACEPROOF_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "cli-client", "--rate", "5", "--burst", "7", "--monthly-quota", "50"]
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("fp_")
    assert runner.invoke(app, ["keys", "set", "cli-client", "--burst", "3"]).exit_code == 0
    assert runner.invoke(app, ["keys", "set", "no-such-client", "--burst", "3"]).exit_code == 1
    _compare_less(stack.a, {"Authorization": f"Bearer {key}"})
    usage = runner.invoke(app, ["keys", "usage", "cli-client"])
    assert usage.exit_code == 0, usage.output
    row = json.loads(usage.output)
    assert (row["ratePerSecond"], row["burst"], row["monthlyQuota"], row["requests"]) == (5.0, 3, 50, 1)
    listing = runner.invoke(app, ["keys", "list"])
    assert key not in listing.output and key not in usage.output
