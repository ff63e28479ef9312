"""What the call agent needs from the outside world, as small ports (fakes in unit tests)."""

from __future__ import annotations

from typing import Protocol

from contracts.envelope import Event
from infra.publisher import PublishFailed  # raised by EventSink (a sampled frame's event is dropped)

__all__ = ["EventSink", "PublishFailed"]


class EventSink(Protocol):
    async def publish(self, event: Event, routing_key: str) -> None:
        """Publish ``event`` on the events exchange. Raises ``PublishFailed``."""
        ...
