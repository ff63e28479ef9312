"""Per-client rate limits and monthly quotas, shared by every gateway replica (state in the database).

* Every route authenticated with an API key (or the static token, client ``static``) takes one
  token from the client's bucket (steady ``rate_per_second``, size ``burst``) and counts one
  request against its ``monthly_quota``; see :func:`services.gateway.dependencies.principal`.
* The browser's routes (offer, status), authenticated by a session's client token, take from a
  bucket of their own per session (``session_rate_per_second`` / ``session_burst``) and count
  against no quota: the app's quota is charged when it creates the session, and a leaked client
  token can only spend its own session's small bucket.
* Refusals are 429 problem+json (``RATE_LIMITED``, ``QUOTA_EXCEEDED``) with ``Retry-After``;
  every limited response carries ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``
  (IETF draft names) and the same values as ``X-RateLimit-*``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.limits import Limits, RateDecision
from domain.ports import Clock, RateBuckets
from infra.settings import Settings
from services.gateway.problems import ProblemError

__all__ = ["RateLimitHeaders", "RateLimiter", "decision_headers", "static_limits"]

#: Where the decision's headers wait for :class:`RateLimitHeaders` (the request's state).
STATE_KEY = "ratelimit_headers"
SESSION_PREFIX = "session:"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def static_limits(settings: Settings) -> Limits:
    return Limits(settings.static_rate_per_second, settings.static_burst, settings.static_monthly_quota)


def decision_headers(decision: RateDecision) -> dict[str, str]:
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
    }
    headers |= {f"X-{name}": value for name, value in headers.items()}
    if decision.quota is not None:
        headers["X-Quota-Limit"] = str(decision.quota)
        if decision.quota_remaining is not None:
            headers["X-Quota-Remaining"] = str(decision.quota_remaining)
    if not decision.allowed:
        headers["Retry-After"] = str(decision.retry_after_s)
    return headers


class RateLimiter:
    """Charges requests to buckets; raises a 429 :class:`ProblemError` when one is empty."""

    def __init__(self, repository: RateBuckets, settings: Settings, clock: Clock = _utc_now) -> None:
        self._repository = repository
        self._session_limits = Limits(settings.session_rate_per_second, settings.session_burst, None)
        self._clock = clock

    async def charge(self, request: Request, client_key: str, limits: Limits) -> RateDecision:
        decision = await self._repository.take(client_key, limits, self._clock())
        headers = decision_headers(decision)
        if not decision.allowed:
            raise _refusal(decision, headers)
        setattr(request.state, STATE_KEY, headers)
        return decision

    async def charge_session(self, request: Request, session_id: str) -> RateDecision:
        return await self.charge(request, SESSION_PREFIX + session_id, self._session_limits)


def _refusal(decision: RateDecision, headers: dict[str, str]) -> ProblemError:
    if decision.code == "QUOTA_EXCEEDED":
        detail = f"The monthly quota of {decision.quota} requests is used up; it renews on the 1st (UTC)."
        return ProblemError(429, "Quota exceeded", detail, code="QUOTA_EXCEEDED", headers=headers)
    detail = f"Too many requests; retry in {decision.retry_after_s} s."
    return ProblemError(429, "Too many requests", detail, code="RATE_LIMITED", headers=headers)


class RateLimitHeaders:
    """ASGI middleware: adds the headers a route's rate-limit charge left in the request state."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state")
                headers = state.get(STATE_KEY) if isinstance(state, dict) else None
                if headers:
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    extra = [
                        (name.lower().encode(), value.encode())
                        for name, value in headers.items()
                        if name.lower().encode() not in present
                    ]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self._app(scope, receive, with_headers)
