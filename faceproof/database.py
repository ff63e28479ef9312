"""Short-lived database access for CLI commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from infra.db.engine import create_engine, session_factory
from infra.db.repositories import ApiClientRepository
from infra.db.security import RateLimitRepository
from infra.settings import Settings


@asynccontextmanager
async def api_clients(settings: Settings) -> AsyncIterator[ApiClientRepository]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield ApiClientRepository(session_factory(engine))
    finally:
        await engine.dispose()


@asynccontextmanager
async def rate_limits(settings: Settings) -> AsyncIterator[RateLimitRepository]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield RateLimitRepository(session_factory(engine))
    finally:
        await engine.dispose()
