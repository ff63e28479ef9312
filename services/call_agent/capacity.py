"""How many WebRTC connections one call agent holds at once (FACEPROOF_MAX_CONCURRENT_CALLS).

Hosted sessions and video calls each hold a peer connection, a video decoder and an encoder: they
share one cap. A connection takes a :class:`Slot` before any work is done for it and gives it back
when it closes; a command that finds no free slot is refused at once (an offer: SessionStarted with
CALL_AGENT_BUSY, so the gateway answers 503 with Retry-After; a video call: CallFailed with
CALL_AGENT_BUSY, so the controller gets one failure callback) rather than degrading every call
already running on this agent.
"""

from __future__ import annotations

from infra.telemetry.metrics import WEBRTC_REFUSED

__all__ = ["CallSlots", "Slot"]


class Slot:
    """One held connection; :meth:`release` is idempotent."""

    def __init__(self, slots: CallSlots) -> None:
        self._slots: CallSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots._give_back(self)
            self._slots = None


class CallSlots:
    """At most ``limit`` connections (0: no cap)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the cap is 0 (none) or more")
        self.limit = limit
        self._held: set[Slot] = set()

    @property
    def in_use(self) -> int:
        return len(self._held)

    def take(self, kind: str) -> Slot | None:
        """A slot, or None when ``limit`` connections are held (counted by ``kind``: session, room)."""
        if self.limit and len(self._held) >= self.limit:
            WEBRTC_REFUSED.labels(kind).inc()
            return None
        slot = Slot(self)
        self._held.add(slot)
        return slot

    def _give_back(self, slot: Slot) -> None:
        self._held.discard(slot)
