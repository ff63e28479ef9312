"""What the call agent needs from the outside world, as small ports (fakes in unit tests)."""

from __future__ import annotations

from typing import Protocol

from contracts.envelope import Event
from infra.db.records import SessionRecord
from infra.erasure import Tombstones
from infra.publisher import PublishFailed  # raised by EventSink (a sampled frame's event is dropped)

__all__ = ["EventSink", "PublishFailed", "SessionLeases", "SessionRows"]


class EventSink(Protocol):
    async def publish(self, event: Event, routing_key: str) -> None:
        """Publish ``event`` on the events exchange. Raises ``PublishFailed``."""
        ...


class SessionLeases(Protocol):
    """The session rows (``infra.db.repositories.SessionRepository`` fits)."""

    async def fetch(self, session_id: str) -> SessionRecord | None: ...

    async def touch_connection(self, session_id: str, connection_id: str) -> bool: ...

    async def release_connection(self, session_id: str, connection_id: str) -> bool: ...


class SessionRows(SessionLeases, Tombstones, Protocol):
    """The leases and the erasure tombstones (the store the agent writes frames to checks them)."""


