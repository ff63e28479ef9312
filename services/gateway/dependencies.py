"""What request handlers receive: the process's resources and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Header, Request
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.ports import FlowRows, ObjectStore
from infra.db.repositories import SessionRepository
from infra.db.security import LivenessFailures, RateLimitRepository
from infra.settings import Settings
from services.gateway.auth import Authenticator, Principal, remembered_principal
from services.gateway.comparisons import Comparisons
from services.gateway.failed_logins import FailedLogins, client_address
from services.gateway.offers import CallAgents
from services.gateway.problems import ProblemError
from services.gateway.ratelimit import RateLimiter
from services.intake.ports import CallCommands


class Eraser(Protocol):
    """Erases one session's biometric data (``infra.retention.Retention``); True when this call
    purged it. Raises ``StorageError`` (the tombstone stays: the reconciler finishes it)."""

    async def erase(self, session_id: str, *, actor: str) -> bool: ...


@dataclass(frozen=True)
class Resources:
    """Everything the gateway's routes use, built once by the composition root."""

    settings: Settings
    database: AsyncEngine
    sessions: SessionRepository
    store: ObjectStore
    broker: RabbitBroker
    comparisons: Comparisons
    authenticate: Authenticator
    call_agents: CallAgents
    #: The call flows (``infra.db.flows.CallFlowRepository``).
    flows: FlowRows
    #: Where JoinCall goes (``services.intake.calls.BrokerCallCommands``).
    call_commands: CallCommands
    eraser: Eraser
    #: None: no rate limits (FACEPROOF_RATE_LIMITS=false).
    limiter: RateLimiter | None = None
    #: Buckets and monthly usage (the admin routes read it).
    rate_limits: RateLimitRepository | None = None
    #: Failed liveness sessions per subject (lockout); None: no lockout.
    failures: LivenessFailures | None = None
    #: Failed client-token checks per address (the Authenticator counts API keys' in the same one).
    failed_logins: FailedLogins | None = None


def _resources(request: Request) -> Resources:
    value: Resources = request.app.state.resources
    return value


async def resources(request: Request) -> Resources:
    """The process's resources. A coroutine, as every dependency here: FastAPI runs a plain ``def``
    dependency in its thread pool, a hop to a thread and back on every request."""
    return _resources(request)


async def admit(request: Request, res: Resources, authorization: str | None) -> Principal:
    """The authenticated caller, charged one request to its rate limit and monthly quota (401,
    429 as :class:`ProblemError`)."""
    caller = await res.authenticate(authorization, request.headers.get("host"), client_address(request.scope))
    if res.limiter is not None and caller.limits is not None:
        await res.limiter.charge(request, caller.owner, caller.limits)
    return caller


async def principal(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Principal:
    """The caller of a route that needs an API key, admitted once (so every such route is rate
    limited): by the request guard before it reads the body, on the routes that take one
    (services.gateway.limits), else here."""
    return remembered_principal(request.scope) or await admit(request, _resources(request), authorization)


async def charge_session(request: Request, session_id: str) -> None:
    """The browser's routes, once the client token is checked: one small bucket per session, no
    quota (the owner's quota was charged when the session was created)."""
    res = _resources(request)
    if res.limiter is not None:
        await res.limiter.charge_session(request, session_id)


async def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if not caller.admin:
        raise ProblemError(403, "Forbidden", "This route needs an admin API key.", code="ADMIN_REQUIRED")
    return caller


ResourcesDep = Annotated[Resources, Depends(resources)]
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(admin)]
