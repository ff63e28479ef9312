"""The call agent's handlers: answer StartSession, route session events to their connections."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from contracts.commands import StartSession
from contracts.envelope import Event, utc_now
from contracts.events import (
    ChallengeIssued,
    ChallengeVerdict,
    LivenessDecided,
    ReadinessChecked,
    SessionFinished,
    SessionStarted,
)
from contracts.routing import EventKey
from contracts.values import ErrorCode, ErrorInfo
from domain.ports import EventPublisher, SessionLeases
from infra.publisher import PublishFailed
from infra.storage import ObjectStore
from services.call_agent.capacity import CallSlots, Slot
from services.call_agent.connection import InvalidOffer, PeerSession, StreamConfig

__all__ = ["SESSION_EVENTS", "CallAgent", "parse_session_event"]

log = logging.getLogger("faceproof.call_agent")

#: The events a call agent follows, by routing key (routing.CALL_AGENT_SESSION_EVENTS).
SESSION_EVENTS: dict[str, type[Event]] = {
    EventKey.CHALLENGE_ISSUED: ChallengeIssued,
    EventKey.READINESS_CHECKED: ReadinessChecked,
    EventKey.CHALLENGE_VERDICT: ChallengeVerdict,
    EventKey.LIVENESS_DECIDED: LivenessDecided,
    EventKey.SESSION_FINISHED: SessionFinished,
}


def parse_session_event(routing_key: str, body: bytes) -> Event | None:
    """A followed session event, or None (another key, or a malformed body: logged, dropped)."""
    kind = SESSION_EVENTS.get(routing_key)
    if kind is None:
        return None
    try:
        return kind.model_validate_json(body)
    except ValidationError:
        log.warning("ignored a malformed %s event", routing_key)
        return None


class CallAgent:
    """Holds this process's session connections, by session id."""

    def __init__(
        self,
        config: StreamConfig,
        *,
        leases: SessionLeases,
        store: ObjectStore,
        events: EventPublisher,
        slots: CallSlots | None = None,
    ) -> None:
        self._config = config
        self._leases = leases
        self._store = store
        self._events = events
        self._slots = slots if slots is not None else CallSlots(0)
        self._sessions: dict[str, PeerSession] = {}

    @property
    def sessions(self) -> dict[str, PeerSession]:
        return dict(self._sessions)

    async def start(self, command: StartSession) -> SessionStarted:
        """Answer the offer; a closed session, a bad offer or a full agent (CALL_AGENT_BUSY, see
        :mod:`services.call_agent.capacity`) is answered with an error, not raised.

        Raises ``PublishFailed`` (retry) when SessionStarted cannot be published.
        """
        existing = self._sessions.get(command.session_id)
        if existing is not None and existing.connection_id == command.connection_id and not existing.closed:
            return self._started(command, answer_sdp=existing.answer_sdp)  # a redelivered command
        record = await self._leases.fetch(command.session_id)
        if record is None or record.status.terminal or record.expires_at <= utc_now():
            return self._failed(command, ErrorCode.SESSION_CLOSED, "the session is finished or expired")
        if record.connection_id is not None and record.connection_id != command.connection_id:
            return self._failed(command, ErrorCode.SESSION_CLOSED, "a newer connection holds the session")
        if existing is not None:  # (its slot is free again once it is closed)
            await existing.close(release=False, why="the client reconnected")
        slot = self._slots.take("session")
        if slot is None:
            return self._failed(
                command,
                ErrorCode.CALL_AGENT_BUSY,
                f"this call agent holds its {self._slots.limit} connections; offer again later",
            )
        try:
            session = PeerSession(
                command,
                config=self._config,
                store=self._store,
                events=self._events,
                leases=self._leases,
                on_closed=lambda closed: self._forget(closed, slot),
            )
        except BaseException:
            slot.release()
            raise
        try:
            answer_sdp = await session.answer()
        except InvalidOffer as error:
            await session.close(release=False, why="invalid offer")
            return self._failed(command, ErrorCode.INVALID_OFFER, str(error))
        except BaseException:
            await session.close(release=False, why="the offer could not be answered")
            raise
        self._sessions[command.session_id] = session
        started = self._started(command, answer_sdp=answer_sdp)
        try:
            await self._events.event(started.model_copy(update={"answer_sdp": ""}), EventKey.SESSION_STARTED)
        except PublishFailed:
            await session.close(release=False, why="SessionStarted could not be published")
            raise
        log.info("session connection answered", extra={"session_id": command.session_id})
        return started

    async def on_event(self, routing_key: str, body: bytes) -> None:
        """A session event from the agent's own queue; events of sessions held elsewhere are ignored."""
        event = parse_session_event(routing_key, body)
        if event is None:
            return
        session_id = getattr(event, "session_id", None)
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is not None and not session.closed:
            session.apply(event)

    async def close(self) -> None:
        """Hang up every connection (shutdown)."""
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.close(why="the call agent is stopping") for s in sessions))

    def _forget(self, session: PeerSession, slot: Slot) -> None:
        slot.release()
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]

    @staticmethod
    def _started(command: StartSession, *, answer_sdp: str) -> SessionStarted:
        return SessionStarted(
            correlation_id=command.session_id,
            client_id=command.client_id,
            session_id=command.session_id,
            connection_id=command.connection_id,
            answer_sdp=answer_sdp,
        )

    @staticmethod
    def _failed(command: StartSession, code: ErrorCode, detail: str) -> SessionStarted:
        log.info("offer refused: %s", code.value, extra={"session_id": command.session_id})
        return SessionStarted(
            correlation_id=command.session_id,
            client_id=command.client_id,
            session_id=command.session_id,
            connection_id=command.connection_id,
            error=ErrorInfo(code=code, detail=detail),
        )
