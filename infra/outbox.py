"""The transactional outbox: a message that follows a state change is written in the state
change's own transaction (:func:`infra.db.outbox.stage`), and a relay publishes it (:class:`OutboxRelay`).

So the change and its message commit together or not at all: a broker that is down, or a process
that dies, between the commit and the publish delays the message and never loses it. The relay
publishes the unsent rows in ``id`` order, waits for each publisher confirm, marks the confirmed
ones sent and stops at the first failure (a later row never overtakes an earlier one); it tries
again after a back-off. A message no broker would take (over ``MAX_MESSAGE_BYTES``) is set aside
instead, logged, without its payload: retrying it would hold back every row after it for ever.
A commit in the same process that staged rows wakes the relay
(:meth:`SqlOutbox.wakes`, or :meth:`OutboxRelay.wake` by hand), so its rows go out at once; a
relay woken while another process's relay held the lock tries again after :data:`RETRY_S`.
Idle, it polls every ``poll_s`` (2 s): only a fallback, for rows of a process that died before
its relay sent them.
A process that dies after a confirm and before marking sends that row again: the message keeps
its ``message_id``, and its consumers are idempotent (docs/reliability.md).

Every process that writes outbox rows runs a relay. On PostgreSQL a batch holds a transaction
advisory lock (:data:`RELAY_LOCK_KEY`), so one relay publishes at a time, in order, whichever
process wrote the rows; on SQLite (one process) the batch is read and marked in two short
transactions. Sent rows are forgotten by the housekeeping sweep (infra/housekeeping.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, NoReturn, Protocol

from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.outgoing import Outgoing
from infra.db.outbox import Pending, SqlOutbox, stage
from infra.publisher import MessageExpired, MessageTooLarge, Publisher, PublishFailed
from infra.settings import Settings

__all__ = ["Batch", "OutboxRelay", "OutboxStore", "Sender", "SqlOutbox", "stage"]

log = logging.getLogger("faceproof.outbox")

DEFAULT_BATCH: Final = 100
DEFAULT_POLL_S: Final = 2.0
#: The first back-off after a failure, and the wait before trying again when another relay held
#: the lock (doubling to :data:`MAX_BACKOFF_S` while failures last).
RETRY_S: Final = 0.2
#: A batch marks what it has sent at least this often: on PostgreSQL its transaction holds the relay
#: lock, and one idle for 60 s (publishing 100 rows of a slow broker, or large ones) was ended by
#: the server, its marks with it; the next batch sent the same rows again, and as slowly, for ever.
MARK_EVERY_S: Final = 10.0
MAX_BACKOFF_S: Final = 10.0


class Batch(Protocol):
    messages: Sequence[Pending]

    async def mark_sent(self, ids: Sequence[int]) -> None: ...

    async def mark_failed(self, row_id: int, error: str) -> None: ...

    async def set_aside(self, row_id: int, error: str) -> None: ...


class OutboxStore(Protocol):
    def batch(self, limit: int) -> AbstractAsyncContextManager[Batch | None]:
        """The oldest unsent messages (None: another relay has them); marks commit at the end."""
        ...

    def wakes(self, wake: Callable[[], None]) -> AbstractContextManager[None]:
        """While the block runs, ``wake()`` after each commit in this process that wrote messages."""
        ...


class Sender(Protocol):
    async def send(self, outgoing: Outgoing) -> None:
        """Publish and wait for the confirm; raises ``PublishFailed``."""
        ...


@dataclass(frozen=True)
class OutboxRelay:
    """Publishes the outbox's unsent messages in order (see the module's docstring)."""

    store: OutboxStore
    sender: Sender
    batch: int = DEFAULT_BATCH
    poll_s: float = DEFAULT_POLL_S
    _woken: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False, compare=False)

    @classmethod
    def for_process(
        cls, sessions: async_sessionmaker[AsyncSession], broker: RabbitBroker, settings: Settings
    ) -> OutboxRelay:
        """The relay of a process: its database, its broker (publisher confirms), its settings."""
        return cls(
            SqlOutbox(sessions), Publisher.for_settings(broker, settings), poll_s=settings.outbox_poll_s
        )

    def wake(self) -> None:
        """Relay now: rows were just committed in this process (the poll is the fallback)."""
        self._woken.set()

    async def relay_once(self) -> int:
        """One batch: the number of messages sent. Raises ``PublishFailed`` after marking those
        confirmed before the failure (the rest wait for the next try, in order)."""
        return await self._relay_batch() or 0

    async def _relay_batch(self) -> int | None:
        """:meth:`relay_once`, with ``None`` when another relay held the lock."""
        failure: PublishFailed | None = None
        async with self.store.batch(self.batch) as batch:
            if batch is None:  # another relay holds the lock
                return None
            sent: list[int] = []
            total, marked_at = 0, time.monotonic()
            for pending in batch.messages:
                if sent and time.monotonic() - marked_at >= MARK_EVERY_S:
                    await batch.mark_sent(sent)  # and the batch's transaction is not idle for long
                    total, sent, marked_at = total + len(sent), [], time.monotonic()
                try:
                    await self.sender.send(pending.message)
                except (MessageTooLarge, MessageExpired) as error:  # never to be sent: the rest must not wait
                    log.error(
                        "outbox message %s (%s) set aside: %s",
                        pending.message.message_id,
                        pending.message.routing_key,
                        error,
                    )
                    await batch.set_aside(pending.id, str(error))
                    continue
                except PublishFailed as error:
                    failure = error
                    await batch.mark_failed(pending.id, str(error))
                    break
                sent.append(pending.id)
            await batch.mark_sent(sent)
        if failure is not None:
            raise failure
        return total + len(sent)

    async def run(self) -> NoReturn:
        """Relay until cancelled: at once while there is more, when woken (a commit of this
        process that wrote messages, or :meth:`wake`), after :data:`RETRY_S` when another relay
        held the lock, every ``poll_s`` when idle; with a growing back-off (from :data:`RETRY_S`
        to :data:`MAX_BACKOFF_S`) while the broker or database fails."""
        with self.store.wakes(self.wake):
            await self._loop()

    async def _loop(self) -> NoReturn:
        backoff = RETRY_S
        while True:
            self._woken.clear()  # a wake-up from now on finds the rows this batch may miss
            try:
                sent = await self._relay_batch()
            except Exception as error:  # the broker, the database, anything: never the loop's end
                log.warning("outbox relay: %s; again in %.1f s", type(error).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            backoff = RETRY_S
            if sent is None:  # another process's relay has the rows (or its own idle look)
                await asyncio.sleep(RETRY_S)
            elif sent < self.batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):  # not wait_for: docs/reliability.md
                        await self._woken.wait()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Relay in the background while the block runs (a composition root's lifespan)."""
        task = asyncio.create_task(self.run(), name="outbox-relay")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
