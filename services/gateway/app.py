"""Composition root of the gateway: builds its resources in the lifespan and mounts the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope

from contracts.routing import ALL_ROUTES
from domain.ports import ObjectStore
from infra.broker import create_broker, declare_topology
from infra.db.engine import create_engine, session_factory
from infra.db.flows import CallFlowRepository
from infra.db.migrate import upgrade_async
from infra.db.repositories import ApiClientRepository, SessionRepository
from infra.db.security import LivenessFailures, RateLimitRepository
from infra.outbox import OutboxRelay
from infra.publisher import Publisher
from infra.retention import Retention
from infra.rpc import BrokerRpc
from infra.settings import Settings, TlsTermination
from infra.storage import open_store
from infra.telemetry import http as http_telemetry
from services.gateway.auth import Authenticator, Principal
from services.gateway.body_rules import BodyRules
from services.gateway.comparisons import BrokerComparisons
from services.gateway.cors import ClientCors
from services.gateway.dependencies import Resources, admit
from services.gateway.failed_logins import FailedLogins
from services.gateway.headers import ResponseHeaders
from services.gateway.limits import RequestGuard
from services.gateway.offers import BrokerCallAgents
from services.gateway.problems import install_problem_handlers
from services.gateway.ratelimit import RateLimiter, RateLimitHeaders, static_limits
from services.gateway.routes import admin, calls, compare, erasure, health, sessions
from services.intake.calls import BrokerCallCommands


def _resources(
    settings: Settings,
    database: AsyncEngine,
    counters: AsyncEngine,
    store: ObjectStore,
    broker: RabbitBroker,
    rpc: BrokerRpc,
) -> Resources:
    """The routes' resources over one database (``counters``: the rate limit's engine on it, see
    :func:`create_app`), store, broker connection and RPC client."""
    sessions_ = session_factory(database)
    rate_limits = RateLimitRepository(session_factory(counters))
    failed_logins = FailedLogins(settings.failed_logins_per_second, settings.failed_logins_burst)
    return Resources(
        settings=settings,
        database=database,
        sessions=SessionRepository(sessions_),
        store=store,
        broker=broker,
        comparisons=BrokerComparisons(rpc),
        authenticate=Authenticator(
            ApiClientRepository(sessions_), settings.static_token, static_limits(settings), failed_logins
        ),
        call_agents=BrokerCallAgents(rpc),
        flows=CallFlowRepository(sessions_),
        call_commands=BrokerCallCommands(Publisher.for_settings(broker, settings)),
        eraser=Retention(sessions_, store),
        limiter=RateLimiter(rate_limits, settings) if settings.rate_limits else None,
        rate_limits=rate_limits,
        failures=LivenessFailures(sessions_),
        failed_logins=failed_logins,
    )


def create_app(settings: Settings, *, migrate: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = create_engine(settings.resolved_database_url)
        # The rate limit's take (every API request, before its body is read) commits without
        # waiting for the disk: the flush was most of its time (bench compare, docs/benchmarks.md).
        # A crash of the database's machine may forget the last fraction of a second of takes (a
        # client gets those tokens again, the month's count misses them); replicas still share
        # every bucket, as other connections see a commit at once.
        counters = create_engine(settings.resolved_database_url, wait_for_disk=False)
        if migrate:
            await upgrade_async(database)
        store = open_store(settings.resolved_storage_url)
        await store.ensure_buckets()
        broker = create_broker(settings)
        await broker.connect()
        await declare_topology(broker, ALL_ROUTES, delivery_limit=settings.delivery_limit)
        rpc = BrokerRpc(settings.broker_url, message_ttl_s=settings.message_ttl_s)
        await rpc.start()
        app.state.resources = _resources(settings, database, counters, store, broker, rpc)
        try:
            # SessionFinished of the lazy expiry and of erasure, from the outbox
            relay = OutboxRelay.for_process(session_factory(database), broker, settings)
            async with relay.running():
                yield
        finally:
            await rpc.close()
            await broker.stop()
            await counters.dispose()
            await database.dispose()

    app = FastAPI(
        title="faceproof",
        summary="Is a live human in front of the camera, and is it the person on the reference photo?",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=http_telemetry.FASTAPI_TELEMETRY_OFF,  # HttpTelemetry below is the one
    )
    install_problem_handlers(app)

    async def admit_caller(scope: Scope, authorization: str | None) -> Principal:
        return await admit(Request(scope), app.state.resources, authorization)

    app.add_middleware(
        RequestGuard,
        rules=BodyRules(settings),
        max_depth=settings.max_json_depth,
        admit=admit_caller,
        body_timeout_s=settings.body_timeout_s,
        max_values=settings.max_json_values,
    )
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(ClientCors)
    app.add_middleware(ResponseHeaders, hsts=settings.tls_termination is TlsTermination.NATIVE)
    http_telemetry.install(app)  # outermost: request metrics, span, request id (/metrics: own port)
    for module in (health, compare, sessions, calls, admin):
        app.include_router(module.router)
    app.include_router(erasure.router)  # DELETE /v1/sessions/{id} (retention)
    return app
