"""The gateway's rate limits (services/gateway/ratelimit.py) over fake buckets: the API client's
bucket and quota on its routes, the session's own bucket on the browser's, and what a caller reads
(429 with its code and Retry-After, the RateLimit-* headers on answers)."""

from __future__ import annotations

import base64

import httpx

from infra.settings import Settings
from services.gateway.ratelimit import RateLimiter
from tests.unit.gateway.fakes import API_KEY, FakeComparisons, Gateway, compared
from tests.unit.ingress.fakes import FakeLimiter
from tests.unit.intake.fakes import jpeg

KEY = {"Authorization": f"Bearer {API_KEY}"}
IMAGE = base64.b64encode(jpeg()).decode()
SETTINGS = Settings(session_rate_per_second=2, session_burst=4)


def limited(buckets: FakeLimiter) -> Gateway:
    return Gateway(limiter=RateLimiter(buckets, SETTINGS), comparisons=FakeComparisons(compared=compared))  # type: ignore[arg-type]


async def compare(gateway: Gateway) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post("/v1/compare", json={"source": IMAGE, "target": IMAGE}, headers=KEY)


async def test_a_client_within_its_limit_is_charged_its_own_bucket_and_told_what_is_left() -> None:
    buckets = FakeLimiter(allowance=10)
    response = await compare(limited(buckets))
    assert response.status_code == 200
    [(key, limits)] = buckets.taken
    assert key == "client-1" and (limits.rate_per_second, limits.burst, limits.monthly_quota) == (10, 10, 100)
    assert (response.headers["ratelimit-limit"], response.headers["ratelimit-remaining"]) == ("10", "9")
    assert response.headers["x-ratelimit-remaining"] == "9" and "retry-after" not in response.headers


async def test_over_the_limit_is_429_before_the_matcher_is_asked() -> None:
    gateway = limited(FakeLimiter(allowance=0))
    response = await compare(gateway)
    assert response.status_code == 429 and response.json()["code"] == "RATE_LIMITED"
    assert response.headers["retry-after"] == "7" and response.headers["ratelimit-remaining"] == "0"
    assert gateway.comparisons.asked == []


async def test_a_used_up_quota_says_so() -> None:
    response = await compare(limited(FakeLimiter(allowance=0, code="QUOTA_EXCEEDED")))
    assert response.status_code == 429 and response.json()["code"] == "QUOTA_EXCEEDED"


async def test_the_browser_spends_its_sessions_bucket_not_the_clients() -> None:
    buckets = FakeLimiter(allowance=10)
    gateway = limited(buckets)
    session_id, token = gateway.sessions.add()
    async with gateway.client() as client:
        response = await client.get(
            f"/v1/sessions/{session_id}/status", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    [(key, limits)] = buckets.taken
    assert key == f"session:{session_id}" and (
        limits.rate_per_second,
        limits.burst,
        limits.monthly_quota,
    ) == (2, 4, None)
