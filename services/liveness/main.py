"""Composition root of the liveness worker: models, database, storage, broker, sweepers, relay.

``faceproof worker liveness`` calls :func:`serve`. Tests run :class:`LivenessWorker` in-process
(several at once, sharing one :class:`~services.liveness.session_models.SessionModels`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from datetime import UTC, datetime
from typing import Final, NoReturn

from contracts.commands import ExpireSession
from contracts.events import FrameCaptured, ReferencesMatched, SessionStarted
from contracts.routing import LIVENESS_EXPIRY, LIVENESS_FRAMES, LIVENESS_MATCHES, LIVENESS_SESSIONS
from infra.broker import create_broker, declare_topology, exchange_for, queue_for
from infra.db.engine import create_engine, session_factory
from infra.db.liveness import LivenessRepository
from infra.db.repositories import SessionRepository
from infra.erasure import ErasureGuardedStore
from infra.housekeeping import HOUSEKEEPING_SWEEPER, Housekeeping
from infra.outbox import OutboxRelay
from infra.reconcile import RECONCILE_SWEEPER, Reconciled, Reconciler
from infra.retention import RETENTION_SWEEPER, Retention
from infra.settings import Settings
from infra.storage import ScannableStore, open_store
from infra.sweeps import run_forever
from services.liveness.analysis import DEFAULT_DETECT_EVERY
from services.liveness.frames import FrameProcessor
from services.liveness.handlers import (
    EXPIRY_SWEEPER,
    Deps,
    handle_expire,
    handle_frame,
    handle_references_matched,
    handle_session_started,
    sweep,
)
from services.liveness.serial import KeyedSerializer
from services.liveness.session_models import SessionModels

__all__ = ["LivenessWorker", "load_models", "serve"]

log = logging.getLogger("faceproof.liveness")

ROUTES: Final = (LIVENESS_SESSIONS, LIVENESS_FRAMES, LIVENESS_MATCHES, LIVENESS_EXPIRY)


def load_models(settings: Settings) -> SessionModels:
    """The frame analyzer (with anti-spoofing) and the pack's embedder, loaded once (blocking)."""
    threads = settings.inference_threads or max(
        1, len(os.sched_getaffinity(0)) // max(1, settings.liveness_concurrency)
    )
    return SessionModels.load(
        settings.resolved_models_dir,
        pack=settings.model_pack,
        threads=threads,
        prefer_gpu=settings.prefer_gpu,
        verify_checksums=settings.verify_model_checksums,
        embedder_precision=settings.embedder_precision,
    )


class LivenessWorker:
    """One worker: subscribers on the four liveness queues, and four sweepers (expiry, retention,
    housekeeping, the erasure reconciler), each in a loop that outlives its failures (infra/sweeps.py)."""

    def __init__(
        self,
        settings: Settings,
        *,
        models: SessionModels,
        store: ScannableStore,
        detect_every: int = DEFAULT_DETECT_EVERY,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._database = create_engine(settings.resolved_database_url)
        sessions = session_factory(self._database)
        # frames of several sessions in flight at once; each session's in order (_subscribe)
        self.broker = create_broker(settings, prefetch=settings.liveness_prefetch)
        self.frames = FrameProcessor(
            models.analyzer,
            models.embedder,
            concurrency=settings.liveness_concurrency,
            detect_every=detect_every,
        )
        repository = SessionRepository(sessions)
        #: The events of the steps and endings this worker writes, from the outbox (infra/outbox.py)
        self.relay = OutboxRelay.for_process(sessions, self.broker, settings)
        self.deps = Deps(
            sessions=repository,
            states=LivenessRepository(sessions),
            # Reference and audit images: nothing is written for an erased session.
            store=ErasureGuardedStore(store, repository, writer="liveness"),
            frames=self.frames,
            identity_threshold=models.identity_threshold,
            rng=rng,
        )
        self.retention = Retention(sessions, store)
        self.reconciler = Reconciler(sessions, store, grace_s=settings.orphan_grace_s)
        self.housekeeping = Housekeeping.for_database(sessions, settings)
        self._sweepers: list[asyncio.Task[NoReturn]] = []
        self._subscribe()

    def _subscribe(self) -> None:
        broker, deps, limit = self.broker, self.deps, self.settings.delivery_limit
        #: A session's frames one at a time, in sequence order (tracking follows the frame just
        #: before; two steps of a session would conflict); other sessions' frames meanwhile.
        sessions: KeyedSerializer[str] = KeyedSerializer()

        @broker.subscriber(
            queue_for(LIVENESS_SESSIONS, delivery_limit=limit), exchange_for(LIVENESS_SESSIONS)
        )
        async def on_session_started(event: SessionStarted) -> None:
            await handle_session_started(event, deps)

        @broker.subscriber(queue_for(LIVENESS_FRAMES, delivery_limit=limit), exchange_for(LIVENESS_FRAMES))
        async def on_frame(event: FrameCaptured) -> None:
            async with sessions.hold(event.session_id, event.sequence):
                await handle_frame(event, deps)

        @broker.subscriber(queue_for(LIVENESS_MATCHES, delivery_limit=limit), exchange_for(LIVENESS_MATCHES))
        async def on_references_matched(event: ReferencesMatched) -> None:
            await handle_references_matched(event, deps)

        @broker.subscriber(queue_for(LIVENESS_EXPIRY, delivery_limit=limit), exchange_for(LIVENESS_EXPIRY))
        async def on_expire(command: ExpireSession) -> None:
            await handle_expire(command, deps)

    async def start(self) -> None:
        await self.broker.connect()
        await declare_topology(self.broker, ROUTES, delivery_limit=self.settings.delivery_limit)
        await self.broker.start()
        settings = self.settings
        loops = (
            (EXPIRY_SWEEPER, self.expire, settings.expiry_sweep_s),
            (RETENTION_SWEEPER, self.purge, settings.retention_sweep_s),
            (HOUSEKEEPING_SWEEPER, self.housekeep, settings.housekeeping_sweep_s),
            (RECONCILE_SWEEPER, self.reconcile, settings.reconcile_sweep_s),
        )
        self._sweepers = [
            asyncio.create_task(run_forever(name, step, interval_s=every), name=f"liveness-{name}")
            for name, step, every in loops
        ]
        self._sweepers.append(asyncio.create_task(self.relay.run(), name="liveness-outbox-relay"))

    async def stop(self) -> None:
        for task in self._sweepers:
            task.cancel()
        for task in self._sweepers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sweepers = []
        await self.broker.stop()
        await asyncio.to_thread(self.frames.close)
        await self._database.dispose()

    async def expire(self) -> None:
        """Expire overdue sessions; finish those the matcher left waiting too long; drop the
        tracking state of sessions that sent no frame for a while."""
        await sweep(self.deps, match_timeout_s=self.settings.match_timeout_s)
        self.frames.forget_idle()

    async def purge(self) -> list[str]:
        """Erase the biometric data of sessions past retention (every worker may run it: each
        erasure is idempotent and records one audit event)."""
        return await self.retention.purge_expired(datetime.now(UTC), retention_s=self.settings.retention_s)

    async def reconcile(self) -> Reconciled:
        """Retry unfinished erasures; remove objects of purged sessions and objects without a
        session row (infra/reconcile.py)."""
        return await self.reconciler.run()

    async def housekeep(self) -> dict[str, int]:
        """Forget old processed public commands and idle rate buckets."""
        return await self.housekeeping.run(datetime.now(UTC))


async def serve(settings: Settings) -> None:
    """Load the models, then consume and sweep until SIGINT/SIGTERM."""
    models = await asyncio.to_thread(load_models, settings)
    store = open_store(settings.resolved_storage_url)
    await store.ensure_buckets()
    worker = LivenessWorker(settings, models=models, store=store)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopping.set)
    await worker.start()
    log.info(
        "liveness worker ready (pack %s, %d analysis threads)",
        settings.model_pack,
        settings.liveness_concurrency,
    )
    try:
        await stopping.wait()
    finally:
        await worker.stop()
