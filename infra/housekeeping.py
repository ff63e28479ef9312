"""Housekeeping: forget the bookkeeping rows no one needs any more (docs/operations.md).

* ``processed_commands``: the public ingress keeps one row per (client, message id) so that a
  duplicate runs once; a row older than ``processed_command_keep_s`` is forgotten (a duplicate
  sent later than that runs again).
* ``rate_buckets``: one token bucket per API client, per session and for the static token; a bucket
  idle long enough to be full again is forgotten (it comes back full on the next request).
* ``outbox``: a message published by the relay (infra/outbox.py) is forgotten
  ``outbox_keep_s`` after it was sent; an unsent one whose data came in longer ago than the message
  time to live (``Settings.message_ttl_s``: the broker down that long) is set aside without its
  payload (``outbox_expired``), as the relay would do; other unsent ones are never touched.

Each table is cleaned in statements of at most ``batch`` rows, at most ``max_batches`` of them per
run (the next run takes the rest), so a large backlog never holds locks for long. The tables are
cleaned independently: one failing is logged and counted (infra/sweeps.py), the other goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.ingress import ProcessedCommands
from infra.db.outbox import SqlOutbox
from infra.db.security import RateLimitRepository
from infra.settings import Settings
from infra.sweeps import each

__all__ = ["HOUSEKEEPING_SWEEPER", "Housekeeping"]

#: The sweeper's name in logs and in ``faceproof_sweep_failures_total``.
HOUSEKEEPING_SWEEPER: Final = "housekeeping"
MAX_BATCHES: Final = 20


class CommandLog(Protocol):
    async def purge(self, before: datetime, *, limit: int) -> int: ...


class Buckets(Protocol):
    async def purge_idle(self, now: datetime, *, idle_s: float, limit: int) -> int: ...


class SentMessages(Protocol):
    async def purge(self, before: datetime, *, limit: int) -> int: ...

    async def expire_unsent(self, before: datetime, *, limit: int) -> int: ...


@dataclass(frozen=True)
class Housekeeping:
    commands: CommandLog
    buckets: Buckets
    keep_commands_s: float
    bucket_idle_s: float
    batch: int
    max_batches: int = MAX_BATCHES
    #: The outbox's sent messages, forgotten ``keep_sent_s`` after they were sent (None: kept).
    sent: SentMessages | None = None
    keep_sent_s: float = 86_400
    #: Unsent messages older than this are set aside (None: never).
    message_ttl_s: float | None = None

    @classmethod
    def for_database(cls, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Housekeeping:
        return cls(
            commands=ProcessedCommands(sessions),
            buckets=RateLimitRepository(sessions),
            keep_commands_s=settings.processed_command_keep_s,
            bucket_idle_s=settings.resolved_rate_bucket_idle_s,
            batch=settings.housekeeping_batch,
            sent=SqlOutbox(sessions),
            keep_sent_s=settings.outbox_keep_s,
            message_ttl_s=settings.message_ttl_s,
        )

    async def run(self, now: datetime) -> dict[str, int]:
        """Clean the tables; rows deleted per table (a table that failed is left out)."""
        before = now - timedelta(seconds=self.keep_commands_s)

        async def commands(limit: int) -> int:
            return await self.commands.purge(before, limit=limit)

        async def buckets(limit: int) -> int:
            return await self.buckets.purge_idle(now, idle_s=self.bucket_idle_s, limit=limit)

        tables: dict[str, Callable[[int], Awaitable[int]]] = {
            "processed_commands": commands,
            "rate_buckets": buckets,
        }
        sent = self.sent
        if sent is not None:
            sent_before = now - timedelta(seconds=self.keep_sent_s)

            async def outbox(limit: int) -> int:
                return await sent.purge(sent_before, limit=limit)

            tables["outbox"] = outbox
            if self.message_ttl_s is not None:
                expired_before = now - timedelta(seconds=self.message_ttl_s)

                async def outbox_expired(limit: int) -> int:
                    return await sent.expire_unsent(expired_before, limit=limit)

                tables["outbox_expired"] = outbox_expired
        done = await each(HOUSEKEEPING_SWEEPER, tables, lambda table: self._drain(tables[table]))
        return dict(done)

    async def _drain(self, delete: Callable[[int], Awaitable[int]]) -> int:
        deleted = 0
        for _ in range(self.max_batches):
            count = await delete(self.batch)
            deleted += count
            if count < self.batch:
                break
        return deleted
