"""What request handlers receive: the process's resources and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db.repositories import SessionRepository
from infra.settings import Settings
from infra.storage.base import ObjectStore
from services.gateway.auth import Authenticator, Principal
from services.gateway.comparisons import Comparisons
from services.gateway.offers import CallAgents, SessionEvents


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
    events: SessionEvents


def resources(request: Request) -> Resources:
    value: Resources = request.app.state.resources
    return value


async def principal(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Principal:
    return await resources(request).authenticate(authorization)


ResourcesDep = Annotated[Resources, Depends(resources)]
PrincipalDep = Annotated[Principal, Depends(principal)]
