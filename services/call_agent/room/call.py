"""One video call: join the controller's room, run the liveness session over it, leave.

The same pipeline as a hosted session (services/call_agent/connection.py): the subject's video is
sampled at ``frame_rate``, stored as JPEG and announced with FrameCaptured; the instruction video
(the subject mirrored, the current instruction drawn) is what we produce into the room; session
events (ChallengeIssued ... SessionFinished) update it. Only the transport differs: a mediasoup
room instead of an offer/answer, and no data channel.

The session starts with the subject's first video frame, not with our join: people arrive in a
room seconds or minutes after the controller asked faceproof in. SessionStarted (the liveness
worker draws the challenges and starts the first one's clock) is published when the first frame
arrives; until then the call waits, bounded by ``no_video_timeout_s`` (NO_VIDEO) and the flow's
deadline. Frames are stored and announced only from then on.

The call ends in exactly one way: the session finished (leave after ``hangup_delay_s``), the
session's deadline passed (leave), or a failure — then :class:`CallFailed` is published with the
reason (ROOM_UNREACHABLE, ROOM_REFUSED, SIGNALLING_ERROR, SOCKET_DROPPED, NO_VIDEO, SUBJECT_LEFT)
and the room is left.

A subject who leaves the room during the session (the room closes our consumer of their video)
has ``return_timeout_s`` to come back: back in time, their frames are numbered as a new
connection's, so the liveness worker restarts the current challenge with a fresh baseline and its
full time (the instruction video shows it again); not back, the call fails with SUBJECT_LEFT and a
detail naming the challenge they left during.

A camera frame larger than a hosted session accepts (connection.py's MAX_FRAME_PIXELS, 1920x1080)
fails the call (SIGNALLING_ERROR) before it is shown or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid4

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from contracts.commands import JoinCall
from contracts.envelope import Event, utc_now
from contracts.events import (
    CallFailed,
    CallJoined,
    ChallengeIssued,
    ChallengeVerdict,
    LivenessDecided,
    ReadinessChecked,
    SessionFinished,
    SessionStarted,
)
from contracts.routing import EventKey
from contracts.values import SessionStatus
from domain.ports import EventPublisher
from infra.publisher import PublishFailed
from infra.storage import ObjectStore
from services.call_agent.catalog import load_catalog
from services.call_agent.connection import MAX_FRAME_PIXELS, StreamConfig
from services.call_agent.frames import FramePipeline
from services.call_agent.instructions import Instructions, Screen
from services.call_agent.room.errors import (
    NoVideo,
    RoomError,
    SignallingError,
    SocketDropped,
    SubjectLeft,
)
from services.call_agent.room.mediasoup import RoomConfig, RoomPeer
from services.call_agent.room.protoo import ProtooClient
from services.call_agent.video import InstructionTrack

__all__ = ["CallConfig", "CallOutcome", "RoomCall", "publish_call_failed"]

log = logging.getLogger("faceproof.call_agent.room")


@dataclass(frozen=True)
class CallConfig:
    room: RoomConfig = field(default_factory=RoomConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    #: The subject's first frame must arrive this long after joining, or the call fails (NO_VIDEO).
    #: The session (and its first challenge's clock) starts when that frame arrives.
    no_video_timeout_s: float = 20.0
    #: A subject whose video stops during the session (they left the room) must be back this long
    #: after, or the call fails (SUBJECT_LEFT); back in time, the current challenge starts again.
    return_timeout_s: float = 15.0


@dataclass(frozen=True)
class CallOutcome:
    """How a call ended: ``failure`` is None when the session finished or expired."""

    ended: str
    failure: RoomError | None = None


async def publish_call_failed(events: EventPublisher, command: JoinCall, failure: RoomError) -> None:
    """Publish the flow's CallFailed (the notifier sends the one failure callback). PublishFailed is
    logged, not raised: the notifier's sweeper still ends the flow at its deadline."""
    log.warning(
        "call failed: %s (%s)",
        failure.reason.value,
        failure.detail,
        extra={"session_id": command.session_id, "flow_id": command.flow_id},
    )
    try:
        await events.event(
            CallFailed(
                correlation_id=command.flow_id,
                client_id=command.client_id,
                flow_id=command.flow_id,
                session_id=command.session_id,
                reason=failure.reason.value,
                detail=failure.detail[:500],
            ),
            EventKey.CALL_FAILED,
        )
    except PublishFailed as error:
        log.error("CallFailed could not be published (%s)", error, extra={"flow_id": command.flow_id})


class RoomCall:
    """The call agent's side of one video-call flow (see docs/rooms.md)."""

    def __init__(
        self,
        command: JoinCall,
        *,
        config: CallConfig,
        store: ObjectStore,
        events: EventPublisher,
        on_closed: Callable[[RoomCall], None] = lambda call: None,
    ) -> None:
        self.command = command
        self.flow_id = command.flow_id
        self.session_id = command.session_id
        self.connection_id = f"call-{uuid4().hex[:16]}"
        self.instructions = Instructions(load_catalog(command.language))
        self.joined = False
        self._config = config
        self._store = store
        self._events = events
        self._on_closed = on_closed
        self.frames = FramePipeline(
            session_id=command.session_id,
            connection_id=self.connection_id,
            client_id=command.client_id,
            sequence_base=0,
            frame_rate=config.stream.frame_rate,
            jpeg_quality=config.stream.jpeg_quality,
            store=store,
            events=events,
            kind="room",
            log_extra={"flow_id": command.flow_id},
            on_erased=lambda: self._end(CallOutcome(ended="the session was erased")),
            shown=lambda: self.instructions.shown,
        )
        self._first_frame = asyncio.Event()
        #: The subject's video stopped during the session: which absence is being waited out.
        self._away: int | None = None
        self._absences = 0
        #: SessionStarted was published (the subject's first frame arrived): frames are stored.
        self._started = False
        self._outcome: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._protoo = ProtooClient(
            policy=config.room.address_policy,
            request_timeout_s=config.room.request_timeout_s,
            open_timeout_s=config.room.request_timeout_s,
        )
        self._peer = RoomPeer(
            self._protoo,
            config.room,
            on_track=self._on_track,
            on_failure=self._fail,
            on_video_closed=self._subject_gone,
        )

    @property
    def done(self) -> bool:
        return self._outcome.done()

    def screen(self) -> Screen:
        return self.instructions.screen

    # ------------------------------------------------------------------ the call

    async def run(self) -> CallOutcome:
        """Join, stream until the call ends, leave; publishes CallFailed on a failure. Never raises
        :class:`RoomError` (PublishFailed of CallFailed is logged: the notifier's sweeper still ends
        the flow at its deadline)."""
        self._spawn(self._expire_at(self.command.expires_at), "expiry")
        try:
            self._spawn(self._join(), "join")
            outcome = await self._outcome
        finally:
            await self._shut_down()
        if outcome.failure is not None:
            await self._publish_failure(outcome.failure)
        self._on_closed(self)
        return outcome

    async def stop(self, why: str) -> None:
        """End the call from outside (the agent is stopping): leave without a failure."""
        self._end(CallOutcome(ended=why))

    def apply(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, ReadinessChecked):
            self.instructions.guidance(event, now)
        elif isinstance(event, ChallengeIssued):
            self.instructions.challenge(event, now)
        elif isinstance(event, ChallengeVerdict):
            self.instructions.verdict(event, now)
        elif isinstance(event, LivenessDecided):
            self.instructions.decided(event, now)
        elif isinstance(event, SessionFinished) and self.instructions.session_finished(event) is not None:
            self.frames.stop()
            self._spawn(self._leave_later(f"the session {event.status.value.lower()}"), "leave")

    # ------------------------------------------------------------------ internals

    async def _join(self) -> None:
        try:
            await self._protoo.connect(self.command.ws_url)
            track = InstructionTrack(self.frames.latest, self.screen, rendered=self.instructions.rendered)
            answer = await self._peer.join(track)
        except RoomError as error:
            self._fail(error)
            return
        self.joined = True
        log.info(
            "joined the room (%d other peers)",
            len(answer.get("peers", [])) if isinstance(answer.get("peers"), list) else 0,
            extra={"session_id": self.session_id, "flow_id": self.flow_id},
        )
        self._spawn(self._watch_socket(), "socket")
        self._spawn(self._start_with_the_subject(), "no-video")
        try:
            await self._events.event(
                CallJoined(
                    correlation_id=self.flow_id,
                    client_id=self.command.client_id,
                    flow_id=self.flow_id,
                    session_id=self.session_id,
                ),
                EventKey.CALL_JOINED,
            )
        except PublishFailed as error:
            self._fail(SignallingError(f"could not announce the call ({error})"))

    def _fail(self, error: RoomError) -> None:
        self._end(CallOutcome(ended=error.reason.value, failure=error))

    def _end(self, outcome: CallOutcome) -> None:
        if not self._outcome.done():
            self._outcome.set_result(outcome)

    async def _shut_down(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        with contextlib.suppress(RoomError):
            await self._peer.leave()
        await self._protoo.close()

    async def _publish_failure(self, failure: RoomError) -> None:
        await publish_call_failed(self._events, self.command, failure)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        if self._outcome.done() and name != "leave":
            work.close()
            return
        task: asyncio.Task[None] = asyncio.create_task(work, name=f"room-call-{name}-{self.flow_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda done: self._died(done, name))

    def _died(self, task: asyncio.Task[None], name: str) -> None:
        """A task that raised what the room or the subject sent unexpectedly ends the call as a
        signalling failure (one CallFailed), rather than leaving it stuck until its deadline."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.warning(
            "the call's %s task failed (%s)",
            name,
            type(error).__name__,
            extra={"session_id": self.session_id, "flow_id": self.flow_id},
        )
        self._fail(
            error
            if isinstance(error, RoomError)
            else SignallingError(f"{name} failed ({type(error).__name__})")
        )

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self._away is not None:  # the subject is back: a new connection, the challenge again
            self._away = None
            self.frames.reconnect()
            self.instructions.reshow(time.monotonic())
            log.info("the subject's video is back", extra={"flow_id": self.flow_id})
        self._spawn(self._consume(track), "inbound")

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._subject_gone()
                return
            if not isinstance(frame, VideoFrame):
                continue
            if frame.width * frame.height > MAX_FRAME_PIXELS:  # the hosted session's limit
                self._fail(
                    SignallingError(
                        f"the subject's camera sends frames of {frame.width}x{frame.height}, "
                        f"more than {MAX_FRAME_PIXELS} pixels (1920x1080)"
                    )
                )
                return
            if self._started:
                self.frames.offer(frame)
            else:  # shown in the instruction video; not a session frame yet
                self.frames.latest.frame = frame
                self._first_frame.set()

    def _subject_gone(self) -> None:
        """The room closed our consumer of the subject's video (they left), or its track ended."""
        if not self._started or self.done or self._away is not None:
            return
        self._absences += 1
        self._away = self._absences
        self._spawn(self._wait_for_return(self._absences, self._where()), "away")

    async def _wait_for_return(self, absence: int, where: str) -> None:
        """SUBJECT_LEFT unless the subject's video is back within ``return_timeout_s``."""
        log.info("the subject's video stopped %s", where, extra={"flow_id": self.flow_id})
        await asyncio.sleep(self._config.return_timeout_s)
        if self._away == absence:
            limit = f"{self._config.return_timeout_s:g}"
            self._fail(SubjectLeft(f"the subject left {where} and did not come back within {limit} s"))

    def _where(self) -> str:
        screen = self.instructions.screen
        if screen.challenge is not None and screen.index is not None and screen.count is not None:
            return f"during challenge {screen.index + 1} of {screen.count} ({screen.challenge.value})"
        if screen.index is not None:
            return "between challenges"
        return "before the first challenge"

    async def _watch_socket(self) -> None:
        await self._protoo.dropped.wait()
        self._fail(SocketDropped("the room socket closed during the call"))

    async def _start_with_the_subject(self) -> None:
        """Wait for the subject's first frame (NO_VIDEO past ``no_video_timeout_s``), then start the
        session: SessionStarted starts the first challenge's clock in the liveness worker, so a
        subject who arrives late has the same time as one who was there first."""
        try:
            async with asyncio.timeout(self._config.no_video_timeout_s):
                await self._first_frame.wait()
        except TimeoutError:
            self._fail(NoVideo(f"no video from the subject within {self._config.no_video_timeout_s:g} s"))
            return
        try:
            await self._events.event(
                SessionStarted(
                    correlation_id=self.session_id,
                    client_id=self.command.client_id,
                    session_id=self.session_id,
                    connection_id=self.connection_id,
                ),
                EventKey.SESSION_STARTED,
            )
        except PublishFailed as error:
            self._fail(SignallingError(f"could not start the session ({error})"))
            return
        self._started = True
        self._spawn(self.frames.run(), "frames")
        log.info("the subject's video arrived: session started", extra={"flow_id": self.flow_id})

    async def _expire_at(self, expires_at: datetime) -> None:
        await asyncio.sleep(max(0.0, (expires_at - utc_now()).total_seconds()))
        if not self.joined:
            self._fail(SignallingError("the flow's deadline passed while joining the room"))
            return
        self.instructions.finish(SessionStatus.EXPIRED, [SessionStatus.EXPIRED.value])
        await asyncio.sleep(self._config.stream.hangup_delay_s)
        self._end(CallOutcome(ended="the session expired"))

    async def _leave_later(self, why: str) -> None:
        await asyncio.sleep(self._config.stream.hangup_delay_s)
        self._end(CallOutcome(ended=why))
