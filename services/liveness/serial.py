"""One holder per key at a time, in order; different keys at once.

The liveness worker takes several frames from the broker at a time (``liveness_prefetch``) and
RabbitMQ hands each to its own task. Frames of different sessions may then be analysed and
stepped concurrently, but a session's own frames must go one at a time, in sequence order: the
tracker follows the face from the frame just before (services/liveness/frames.py), and two steps
of one session at once would conflict on its state row. :class:`KeyedSerializer` gives that:
holders of a key go one at a time, the waiting ones lowest ``order`` first (a frame that reached
the handler a little late still goes before the later sequences waiting), and a key is forgotten
as soon as nobody holds or awaits it, so memory is bounded by the messages in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["KeyedSerializer"]

K = TypeVar("K", bound=Hashable)


@dataclass
class _Key:
    #: (order, arrival, future): the waiting holders, lowest order (then earliest) first.
    waiting: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)


class KeyedSerializer(Generic[K]):
    """``async with serializer.hold(key, order):`` one holder per key at a time (event loop only)."""

    def __init__(self) -> None:
        self._keys: dict[K, _Key] = {}
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        """Keys held now (each with its waiting holders)."""
        return len(self._keys)

    def waiting(self, key: K) -> int:
        """Holders waiting for ``key`` (not counting the one holding it)."""
        entry = self._keys.get(key)
        return 0 if entry is None else sum(not f.done() for _, _, f in entry.waiting)

    @asynccontextmanager
    async def hold(self, key: K, order: int = 0) -> AsyncIterator[None]:
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key()  # free: held at once
        else:
            turn = asyncio.get_running_loop().create_future()
            heapq.heappush(entry.waiting, (order, next(self._arrivals), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass_on(key, entry)  # handed the key just as it was cancelled
                raise  # (a cancelled turn is skipped when the key is passed on)
        try:
            yield
        finally:
            self._pass_on(key, entry)

    def _pass_on(self, key: K, entry: _Key) -> None:
        """Hand the key to the next waiting holder, or forget it when none waits."""
        while entry.waiting:
            _, _, turn = heapq.heappop(entry.waiting)
            if not turn.done():
                turn.set_result(None)
                return
        del self._keys[key]
