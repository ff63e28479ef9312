"""Composition root of the notifier: ends video-call flows and delivers their one callback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import NoReturn

from faststream.rabbit import RabbitBroker

from contracts.commands import DeliverCallback, FetchReferences
from contracts.events import CallFailed, ReferencesMatched, SessionFinished
from contracts.routing import (
    NOTIFIER_CALLBACKS,
    NOTIFIER_CALLS,
    NOTIFIER_FETCHES,
    NOTIFIER_MATCHES,
    NOTIFIER_SESSIONS,
)
from domain.ports import SessionReader
from infra.broker import COMMANDS, EVENTS, create_broker, declare_topology, queue_for
from infra.db.audit import AuditLog
from infra.db.engine import create_engine, session_factory
from infra.db.flows import CallFlowRepository
from infra.db.repositories import SessionRepository
from infra.outbox import OutboxRelay, OutboxStore, SqlOutbox
from infra.publisher import Publisher
from infra.safe_fetch import FetchPolicy
from infra.settings import Settings
from infra.sweeps import run_forever
from services.notifier.adapters import HttpCallbackSender, SafeReferenceSource
from services.notifier.handlers import (
    FLOWS_SWEEPER,
    Config,
    Deps,
    handle_call_failed,
    handle_deliver_callback,
    handle_fetch_references,
    handle_references_matched,
    handle_session_finished,
    sweep,
)
from services.notifier.outcome import RetryPolicy
from services.notifier.ports import CallbackSender, ReferenceSource
from services.notifier.shares import ClientShares

__all__ = ["ROUTES", "Notifier", "build_notifier", "config_from", "serve"]

log = logging.getLogger("faceproof.notifier")

ROUTES = (NOTIFIER_SESSIONS, NOTIFIER_MATCHES, NOTIFIER_CALLS, NOTIFIER_FETCHES, NOTIFIER_CALLBACKS)


def config_from(settings: Settings) -> Config:
    return Config(
        retry=RetryPolicy(
            deadline_s=settings.callback_retry_deadline_s,
            max_attempts=settings.callback_max_attempts,
            backoff_s=settings.callback_backoff_s,
            backoff_max_s=settings.callback_backoff_max_s,
        ),
        match_timeout_s=settings.match_timeout_s,
        lease_s=2 * settings.callback_timeout_s + 10,
        fetch_lease_s=2 * settings.fetch_timeout_s + 10,
        secret=settings.callback_signing_secret,
    )


class Notifier:
    """The broker with the notifier's five subscribers, the sweeper task and the outbox relay
    (what follows each flow transition: FetchReferences, MatchReferences, DeliverCallback,
    CallbackDelivered)."""

    def __init__(self, settings: Settings, broker: RabbitBroker, deps: Deps, relay: OutboxRelay) -> None:
        self.settings = settings
        self.broker = broker
        self.deps = deps
        self.relay = relay
        self._tasks: list[asyncio.Task[NoReturn]] = []

    async def start(self) -> None:
        await self.broker.connect()
        await declare_topology(self.broker, ROUTES, delivery_limit=self.settings.delivery_limit)
        await self.broker.start()
        self._tasks = [
            asyncio.create_task(self._sweep_forever(), name="notifier-sweeper"),
            asyncio.create_task(self.relay.run(), name="notifier-outbox-relay"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.broker.stop()

    async def _sweep_forever(self) -> NoReturn:
        """Every ``flow_sweep_s``, whatever a sweep raises (backoff, counted: infra/sweeps.py)."""
        await run_forever(FLOWS_SWEEPER, lambda: sweep(self.deps), interval_s=self.settings.flow_sweep_s)


def build_notifier(
    settings: Settings,
    *,
    flows: CallFlowRepository,
    sessions: SessionReader,
    references: ReferenceSource,
    sender: CallbackSender,
    outbox: OutboxStore,
    audit: AuditLog | None = None,
) -> Notifier:
    """Wire the handlers to the broker; resources are created by the caller (``outbox``: the
    table the flow transitions write to, ``infra.outbox.SqlOutbox`` of the same database)."""
    broker = create_broker(settings)
    publisher = Publisher.for_settings(broker, settings)
    deps = Deps(
        flows=flows,
        sessions=sessions,
        publisher=publisher,
        references=references,
        sender=sender,
        config=config_from(settings),
        shares=ClientShares(settings.callbacks_per_client),
        fetch_shares=ClientShares(settings.reference_fetches_per_client),
        audit=audit,
    )
    limit = settings.delivery_limit

    @broker.subscriber(queue_for(NOTIFIER_SESSIONS, delivery_limit=limit), EVENTS, title="SessionFinished")
    async def on_session_finished(event: SessionFinished) -> None:
        await handle_session_finished(event, deps)

    @broker.subscriber(queue_for(NOTIFIER_MATCHES, delivery_limit=limit), EVENTS, title="ReferencesMatched")
    async def on_references_matched(event: ReferencesMatched) -> None:
        await handle_references_matched(event, deps)

    @broker.subscriber(queue_for(NOTIFIER_CALLS, delivery_limit=limit), EVENTS, title="CallFailed")
    async def on_call_failed(event: CallFailed) -> None:
        await handle_call_failed(event, deps)

    @broker.subscriber(queue_for(NOTIFIER_FETCHES, delivery_limit=limit), COMMANDS, title="FetchReferences")
    async def on_fetch_references(command: FetchReferences) -> None:
        await handle_fetch_references(command, deps)

    @broker.subscriber(queue_for(NOTIFIER_CALLBACKS, delivery_limit=limit), COMMANDS, title="DeliverCallback")
    async def on_deliver_callback(command: DeliverCallback) -> None:
        await handle_deliver_callback(command, deps)

    relay = OutboxRelay(outbox, publisher, poll_s=settings.outbox_poll_s)
    return Notifier(settings, broker, deps, relay)


async def serve(settings: Settings) -> None:
    """Consume until SIGINT or SIGTERM."""
    engine = create_engine(settings.resolved_database_url)
    factory = session_factory(engine)
    policy = FetchPolicy.from_settings(settings)
    sender = HttpCallbackSender(policy, timeout_s=settings.callback_timeout_s)
    notifier = build_notifier(
        settings,
        flows=CallFlowRepository(factory),
        sessions=SessionRepository(factory),
        references=SafeReferenceSource(policy, max_references=settings.max_references),
        sender=sender,
        outbox=SqlOutbox(factory),
        audit=AuditLog(factory),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await notifier.start()
        log.info("notifier ready")
        await stop.wait()
    finally:
        await notifier.stop()
        await sender.close()
        await engine.dispose()
