"""The erasure reconciler: finishes what an erasure or a session creation left behind.

Run periodically by the liveness worker's sweeper (every ``reconcile_sweep_s``):

1. **Purges retried.** A session whose erasure was requested (tombstone set) but whose purge did
   not finish (``purged_at`` unset: the object store failed, the process died) is erased again,
   each on its own: one that fails again is counted and left for the next run.
2. **Orphans removed.** Objects under ``sessions/`` are walked in key order, a bounded batch per
   run (the walk resumes where the last one stopped and starts over at the end). An object is
   removed when its session is purged (written after the purge: a late frame) or when no session
   row owns it and it is older than ``grace_s`` (a reference stored before its row was inserted,
   and the insert failed). The grace period spares a creation in progress.

Metrics: ``faceproof_erasure_retries_total{outcome}``, ``faceproof_orphan_objects_removed_total{reason}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.audit import SYSTEM_ACTOR, AuditAction
from infra.db.errors import translate_errors
from infra.db.tables import SessionRow, utc_now
from infra.erasure import session_of_key
from infra.retention import SESSION_PREFIX, Retention
from infra.storage import ScannableStore, StoredObject
from infra.sweeps import each
from infra.telemetry.metrics import erasure_retry, orphan_removed

__all__ = ["ORPHAN_SCAN_BATCH", "PURGE_RETRY_BATCH", "RECONCILE_SWEEPER", "Reconciled", "Reconciler"]

log = logging.getLogger("faceproof.reconcile")

#: The sweeper's name (logs, ``faceproof_sweep_failures_total{sweeper}``).
RECONCILE_SWEEPER: Final = "reconcile"
#: Unfinished erasures retried per run at most (the next run takes the rest).
PURGE_RETRY_BATCH: Final = 100
#: Objects examined per run at most.
ORPHAN_SCAN_BATCH: Final = 1000


@dataclass(frozen=True, slots=True)
class Reconciled:
    purged: int = 0
    purge_failures: int = 0
    orphans_removed: int = 0


@dataclass
class Reconciler:
    sessions: async_sessionmaker[AsyncSession]
    store: ScannableStore
    #: Objects without a session row are kept this long (a creation may be in progress).
    grace_s: float
    purge_batch: int = PURGE_RETRY_BATCH
    scan_batch: int = ORPHAN_SCAN_BATCH
    _cursor: str | None = field(default=None, init=False)

    async def run(self, now: datetime | None = None) -> Reconciled:
        """One pass of both; raises only when the database or the store cannot be listed."""
        now = now or utc_now()
        purged, failures = await self.retry_purges(now)
        removed = await self.remove_orphans(now)
        return Reconciled(purged=purged, purge_failures=failures, orphans_removed=removed)

    async def retry_purges(self, now: datetime) -> tuple[int, int]:
        """Erase the sessions whose erasure was requested but not finished: (purged, failed)."""
        statement = (
            select(SessionRow.id)
            .where(SessionRow.erase_requested_at.is_not(None), SessionRow.purged_at.is_(None))
            .order_by(SessionRow.erase_requested_at)
            .limit(self.purge_batch)
        )
        with translate_errors():
            async with self.sessions() as session:
                pending = list(await session.scalars(statement))
        retention = Retention(self.sessions, self.store)

        async def erase(session_id: str) -> bool:
            return await retention.erase(
                session_id, actor=SYSTEM_ACTOR, action=AuditAction.SESSION_ERASED, now=now
            )

        # each(): one erasure failing (logged, counted) leaves the others going
        purged = len(await each(RECONCILE_SWEEPER, pending, erase))
        failed = len(pending) - purged
        for outcome, count in (("purged", purged), ("failed", failed)):
            if count:
                erasure_retry(outcome, count)
        if purged:
            log.info("reconciler: %d unfinished erasures purged", purged)
        return purged, failed

    async def remove_orphans(self, now: datetime) -> int:
        """Remove the next batch's objects of purged sessions and, past the grace period, objects
        no session row owns; the number removed."""
        batch = await self.store.scan(SESSION_PREFIX, after=self._cursor, limit=self.scan_batch)
        self._cursor = batch[-1].key if len(batch) >= self.scan_batch else None
        by_session: dict[str, list[StoredObject]] = {}
        for stored in batch:
            session_id = session_of_key(stored.key)
            if session_id is not None:
                by_session.setdefault(session_id, []).append(stored)
        if not by_session:
            return 0
        with translate_errors():
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        select(SessionRow.id, SessionRow.purged_at).where(SessionRow.id.in_(list(by_session)))
                    )
                ).all()
        purged = {row.id for row in rows if row.purged_at is not None}
        owned = {row.id for row in rows}
        settled = now - timedelta(seconds=self.grace_s)
        doomed: list[tuple[str, StoredObject]] = []
        for session_id, objects in by_session.items():
            if session_id in purged:
                doomed += [("erased", o) for o in objects]
            elif session_id not in owned:
                doomed += [("no_row", o) for o in objects if o.modified <= settled]

        async def remove(item: tuple[str, StoredObject]) -> None:
            await self.store.delete(item[1].key)
            orphan_removed(item[0])

        removed = len(await each(RECONCILE_SWEEPER, doomed, remove, name=lambda item: item[1].key))
        if removed:
            log.info("reconciler: %d orphan objects removed", removed)
        return removed
