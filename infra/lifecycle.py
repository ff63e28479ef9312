"""Ending a session: the one application function every entry point calls.

The liveness worker (a decision, an ExpireSession command, the expiry sweep), the gateway (the
lazy expiry on a read, DELETE of an unfinished session) all end sessions through
:meth:`SessionLifecycle.end`. It asks the domain rule (:func:`domain.sessions.end_session`) what
the ending is and writes it in one version-checked transaction: status, result, the lockout
failure when the rule counts it, the SESSION_DECIDED audit record and SessionFinished, which goes
to the outbox and is published by the process's relay (infra/outbox.py), so it is neither lost
when the broker is down at commit time nor written twice. A lost race re-reads the session and
asks again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from domain.ports import SessionReader
from domain.records import SessionRecord
from domain.sessions import Expired, Outcome, SessionEnding, end_session
from infra.db.errors import NotFound, VersionConflict
from infra.telemetry.metrics import session_status

__all__ = ["EndingSessions", "SessionLifecycle"]

log = logging.getLogger("faceproof.sessions")

_ATTEMPTS: Final = 5


class EndingSessions(SessionReader, Protocol):
    """The sessions repository as this function uses it (``infra.db.repositories.SessionRepository``)."""

    async def end(self, ending: SessionEnding) -> SessionRecord:
        """Write the ending and its SessionFinished (outbox) in one transaction; raises
        ``VersionConflict`` when the row moved on, ``NotFound`` when it is gone."""
        ...

    async def decided(self, session_id: str) -> bool:
        """Whether the liveness worker has stored the session's decision."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SessionLifecycle:
    sessions: EndingSessions

    async def end(self, session_id: str, outcome: Outcome) -> SessionRecord | None:
        """End the session with ``outcome``; the ended record when THIS call ended it, None when
        the rule says it does not end (finished already, not yet due) or it does not exist.
        SessionFinished is in the outbox when this returns (the relay publishes it)."""
        if isinstance(outcome, Expired) and await self.sessions.decided(session_id):
            return None  # decided: it ends with its decision (the matcher's answer, or late), not EXPIRED
        for _ in range(_ATTEMPTS):
            record = await self.sessions.fetch(session_id)
            if record is None:
                return None
            ending = end_session(record, outcome, _now())
            if ending is None:
                return None
            try:
                ended = await self.sessions.end(ending)
            except VersionConflict:
                continue
            except NotFound:
                return None
            session_status(ended.status)
            log.info("session %s finished %s", session_id, ended.status.value)
            return ended
        raise VersionConflict(f"session {session_id} kept changing while ending it")
