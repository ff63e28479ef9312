"""Erasure is final: no writer stores anything for a session whose erasure was requested.

``DELETE /v1/sessions/{id}`` sets the session's tombstone (``sessions.erase_requested_at``)
before it deletes anything. Every process that writes under ``sessions/<id>/`` (the call agent's
frames, the liveness worker's reference and audit images) writes through
:class:`ErasureGuardedStore`, which checks the tombstone before the write and again after it,
and removes what it wrote when the tombstone appeared meanwhile. Since the erasure lists and
deletes the session's objects only after its tombstone is committed, a write either ends before
that listing (the erasure deletes it) or sees the tombstone on its second check (the writer
deletes it). What a crash leaves between the two is removed by the reconciler
(``infra.reconcile``): objects of purged sessions, and objects no session row owns.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections import OrderedDict
from datetime import timedelta
from typing import Final, NoReturn

from domain.ports import Tombstones
from infra.db.errors import DatabaseError
from infra.storage import ObjectStore, StorageError, StorageUnavailable
from infra.telemetry.metrics import erased_write

__all__ = ["ErasureGuardedStore", "SessionErased", "session_of_key"]

log = logging.getLogger("faceproof.erasure")

_SESSIONS: Final = "sessions/"
#: Erased session ids remembered per process (refused without asking the database again).
_REMEMBERED: Final = 4096


class SessionErased(StorageError):
    """The session's erasure was requested: the write was refused (or undone). Permanent."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} is erased; nothing is stored for it")
        self.session_id = session_id


def session_of_key(key: str) -> str | None:
    """The session id of a key under ``sessions/<id>/``; ``None`` for any other key."""
    if not key.startswith(_SESSIONS):
        return None
    session_id, slash, _ = key[len(_SESSIONS) :].partition("/")
    return session_id if slash and session_id else None


class ErasureGuardedStore:
    """An ``ObjectStore`` whose writes under ``sessions/<id>/`` honour the session's tombstone.

    ``put`` raises :class:`SessionErased` for an erased session (nothing is left behind) and
    ``StorageUnavailable`` when the tombstone cannot be read (what was written is removed: a
    write that cannot be checked is not kept). A writer cancelled mid-write (a connection hanging
    up) still finishes the check: the write runs shielded. Reads, lists and deletes pass through.
    """

    def __init__(self, store: ObjectStore, tombstones: Tombstones, *, writer: str) -> None:
        self._store = store
        self._tombstones = tombstones
        self._writer = writer
        self._erased: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"ErasureGuardedStore({self._store!r})"

    async def ensure_buckets(self) -> None:
        await self._store.ensure_buckets()

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        session_id = session_of_key(key)
        if session_id is None:
            await self._store.put(key, data, content_type)
            return
        if session_id in self._erased:
            self._refuse(session_id)
        write = asyncio.ensure_future(self._checked_put(session_id, key, data, content_type))
        write.add_done_callback(_retrieve)
        await asyncio.shield(write)

    async def get(self, key: str) -> bytes:
        return await self._store.get(key)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)

    async def list(self, prefix: str) -> builtins.list[str]:
        return await self._store.list(prefix)

    async def presign_get(self, key: str, expires: timedelta) -> str:
        return await self._store.presign_get(key, expires)

    async def ping(self) -> None:
        await self._store.ping()

    async def _checked_put(self, session_id: str, key: str, data: bytes, content_type: str) -> None:
        if await self._check(session_id, key, written=False):
            self._refuse(session_id)
        await self._store.put(key, data, content_type)
        if await self._check(session_id, key, written=True):
            await self._undo(key)
            self._refuse(session_id)

    async def _check(self, session_id: str, key: str, *, written: bool) -> bool:
        try:
            return await self._tombstones.erased(session_id)
        except DatabaseError as error:
            if written:
                await self._undo(key)
            raise StorageUnavailable(
                f"the erasure state of session {session_id} cannot be read ({type(error).__name__})"
            ) from None

    async def _undo(self, key: str) -> None:
        try:
            await self._store.delete(key)
        except StorageError as error:  # the reconciler removes it (the session is purged or erased)
            log.warning("could not remove %s written for an erased session: %s", key, type(error).__name__)

    def _refuse(self, session_id: str) -> NoReturn:
        self._erased[session_id] = None
        self._erased.move_to_end(session_id)
        while len(self._erased) > _REMEMBERED:
            self._erased.popitem(last=False)
        erased_write(self._writer)
        raise SessionErased(session_id)


def _retrieve(write: asyncio.Future[None]) -> None:
    """Mark the outcome of a shielded write seen (its writer may have been cancelled)."""
    if not write.cancelled():
        write.exception()
