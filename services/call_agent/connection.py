"""One session's WebRTC connection: answer the offer, sample and store the camera frames, send
the instruction video and the data channel messages, keep the connection claim alive, hang up."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription
from av import VideoFrame

from contracts.commands import StartSession
from contracts.envelope import Event, utc_now
from contracts.events import (
    ChallengeIssued,
    ChallengeVerdict,
    LivenessDecided,
    ReadinessChecked,
    SessionFinished,
)
from contracts.values import SessionStatus
from domain.ports import EventPublisher, SessionLeases
from infra.db.errors import DatabaseError
from infra.safe_fetch import FetchPolicy
from infra.storage import ObjectStore
from services.call_agent.candidates import filter_candidates
from services.call_agent.catalog import load_catalog
from services.call_agent.frames import FramePipeline
from services.call_agent.instructions import Instructions, Screen
from services.call_agent.video import InstructionTrack

__all__ = [
    "DATA_CHANNEL_LABEL",
    "InvalidOffer",
    "PeerSession",
    "StreamConfig",
    "parse_ice_servers",
]

log = logging.getLogger("faceproof.call_agent")

DATA_CHANNEL_LABEL = "faceproof"
#: Data channels a peer may open on one connection (the page opens one); past it, a hang-up.
MAX_DATA_CHANNELS = 4
#: The largest camera frame the agent decodes (pixels: 1920x1080 in any shape); the page asks for
#: 640x480. A larger stream costs every other session on the agent its decoding and scaling time.
MAX_FRAME_PIXELS = 1920 * 1080


class InvalidOffer(Exception):
    """The SDP offer cannot be answered (unparsable, or no video to receive)."""


@dataclass(frozen=True)
class StreamConfig:
    frame_rate: float = 8.0
    jpeg_quality: int = 85
    heartbeat_s: float = 5.0
    ice_servers: tuple[RTCIceServer, ...] = ()
    hangup_delay_s: float = 1.0
    #: A peer not connected (ICE and DTLS) this long after the answer is hung up: it would hold a
    #: call agent slot (FACEPROOF_MAX_CONCURRENT_CALLS) and the session's claim until expiry.
    connect_timeout_s: float = 20.0
    #: The browser's ICE candidates this refuses are taken out of its offer (candidates.py).
    address_policy: FetchPolicy = field(default_factory=FetchPolicy)


def parse_ice_servers(raw: str) -> tuple[RTCIceServer, ...]:
    """``FACEPROOF_ICE_SERVERS``: a JSON list of ``{"urls", "username"?, "credential"?}``; empty: none."""
    if not raw.strip():
        return ()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"ice_servers is not JSON: {error.msg}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "urls" in e for e in entries):
        raise ValueError('ice_servers must be a JSON list of {"urls", "username"?, "credential"?}')
    return tuple(
        RTCIceServer(urls=e["urls"], username=e.get("username"), credential=e.get("credential"))
        for e in entries
    )


def check_offer_shape(sdp: str) -> None:
    """What the hosted page offers, and nothing else: one video section (sendrecv), at most one
    data section, no audio. Raises :class:`InvalidOffer`. Every other section would start a receiver whose
    frames nobody reads: aiortc queues them without bound (an unpaced audio track grew the agent's
    memory by megabytes a second), and each extra video track decodes on a thread of its own."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as error:  # the browser's text: aiortc's parser raises many kinds on bad SDP
        raise InvalidOffer(f"unparsable SDP ({type(error).__name__})") from None
    kinds = [media.kind for media in description.media]
    if kinds.count("video") != 1:
        raise InvalidOffer(
            "the offer has no video to receive"
            if "video" not in kinds
            else "the offer has more than one video"
        )
    if kinds.count("application") > 1 or set(kinds) - {"video", "application"}:
        raise InvalidOffer("the offer has sections other than one video and one data channel")
    video = next(media for media in description.media if media.kind == "video")
    if video.direction not in (None, "sendrecv"):
        # the instruction video must go back: with a sendonly offer nothing was ever shown, and
        # every challenge's clock started late by its time limit, with nothing judged meanwhile
        raise InvalidOffer("the offer's video must be sendrecv (the page shows the instruction video)")


class PeerSession:
    """The call agent's side of one session connection (see docs/call-agent.md)."""

    def __init__(
        self,
        command: StartSession,
        *,
        config: StreamConfig,
        store: ObjectStore,
        events: EventPublisher,
        leases: SessionLeases,
        on_closed: Callable[[PeerSession], None],
    ) -> None:
        self.session_id = command.session_id
        self.connection_id = command.connection_id
        self.answer_sdp = ""
        self.instructions = Instructions(load_catalog(command.language))
        self._command = command
        self._config = config
        self._store = store
        self._events = events
        self._leases = leases
        self._on_closed = on_closed
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=list(config.ice_servers)))
        self.frames = FramePipeline(
            session_id=command.session_id,
            connection_id=command.connection_id,
            client_id=command.client_id,
            sequence_base=command.sequence_base,
            frame_rate=config.frame_rate,
            jpeg_quality=config.jpeg_quality,
            store=store,
            events=events,
            kind="session",
            log_extra={"session_id": command.session_id},
            on_erased=self._erased,
            shown=lambda: self.instructions.shown,
        )
        self._channel: RTCDataChannel | None = None
        self._data_channels = 0
        self._pending: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    def screen(self) -> Screen:
        return self.instructions.screen

    # ------------------------------------------------------------------ offer / answer

    async def answer(self) -> str:
        """Apply the offer and answer it (after ICE gathering). Raises :class:`InvalidOffer`."""
        check_offer_shape(self._command.offer_sdp)
        offer = filter_candidates(self._command.offer_sdp, self._config.address_policy)
        pc = self._pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=self._command.offer_type))
            self._guard_data_channel()
            pc.addTrack(
                InstructionTrack(self.frames.latest, self.screen, rendered=self.instructions.rendered)
            )
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as error:  # an offer aiortc cannot apply or answer (OperationError: no codec
            # in common, AttributeError or RuntimeError on lines it half parses): the browser's fault
            raise InvalidOffer(f"the offer cannot be answered ({type(error).__name__})") from None
        description = pc.localDescription
        if description is None:
            raise InvalidOffer("no answer was produced")
        self.answer_sdp = description.sdp
        self._spawn(self.frames.run(), "frames")
        self._spawn(self._heartbeat(), "heartbeat")
        self._spawn(self._expire_at(self._command.expires_at), "expiry")
        self._spawn(self._connect_deadline(), "connect")
        return self.answer_sdp

    # ------------------------------------------------------------------ events from the session

    def apply(self, event: Event) -> None:
        now = time.monotonic()
        message: dict[str, Any] | None = None
        if isinstance(event, ReadinessChecked):
            message = self.instructions.guidance(event, now)
        elif isinstance(event, ChallengeIssued):
            message = self.instructions.challenge(event, now)
        elif isinstance(event, ChallengeVerdict):
            message = self.instructions.verdict(event, now)
        elif isinstance(event, LivenessDecided):
            message = self.instructions.decided(event, now)
        elif isinstance(event, SessionFinished):
            self.frames.stop()
            message = self.instructions.session_finished(event)
            if message is not None:
                self._spawn(self._hang_up_later(), "hangup")
        if message is not None:
            self._send(message)

    # ------------------------------------------------------------------ closing

    async def close(self, *, release: bool = True, why: str = "closed") -> None:
        """Hang up (idempotent): stop the tasks, close the peer connection, release the claim."""
        if self._closed:
            return
        self._closed = True
        log.info("hanging up: %s", why, extra={"session_id": self.session_id})
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self._pc.close()
        if release:
            try:
                await self._leases.release_connection(self.session_id, self.connection_id)
            except DatabaseError as error:
                log.warning("could not release the connection (%s)", type(error).__name__)
        self._on_closed(self)

    # ------------------------------------------------------------------ internals

    def _spawn(self, work: Any, name: str) -> None:
        if self._closed:
            work.close()
            return
        task: asyncio.Task[None] = asyncio.create_task(work, name=f"call-agent-{name}-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False)
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        else:
            self._pending.append(text)

    def _flush(self) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        pending, self._pending = self._pending, []
        for text in pending:
            channel.send(text)

    def _guard_data_channel(self) -> None:
        """Hang up on a peer whose data-channel messages overrun the receive window the agent
        advertises (1 MiB). aiortc reassembles whatever arrives, past the window and past the
        message size the answer states, rescanning its list on every chunk: one 32 MiB message
        held the agent's event loop for minutes. A conforming sender never does this (it stops at
        the window), and the page sends a few small messages."""
        sctp = self._pc.sctp
        if sctp is None:
            return
        receive = sctp._receive_data_chunk
        overrun = False

        async def guarded(chunk: Any) -> None:
            nonlocal overrun
            if overrun:
                return
            await receive(chunk)
            if sctp._advertised_rwnd < 0:
                overrun = True
                self._spawn(self.close(why="the peer overran the data channel's receive window"), "overrun")

        sctp._receive_data_chunk = guarded  # type: ignore[method-assign]

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._data_channels += 1
        if self._data_channels > MAX_DATA_CHANNELS:
            self._spawn(self.close(why="the peer opened too many data channels"), "channels")
            return
        if channel.label != DATA_CHANNEL_LABEL or self._channel is not None:
            channel.close()
            return
        self._channel = channel
        channel.on("open", self._flush)
        self._flush()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._spawn(self._consume(track), "inbound")

    async def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed") and not self._closed:
            await self.close(why=f"peer connection {self._pc.connectionState}")

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            if isinstance(frame, VideoFrame):
                if frame.width * frame.height > MAX_FRAME_PIXELS:
                    await self.close(why=f"the camera sends frames of {frame.width}x{frame.height}")
                    return
                self.frames.offer(frame)
        if not self._closed:
            await self.close(why="the camera track ended")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            try:
                ours = await self._leases.touch_connection(self.session_id, self.connection_id)
            except DatabaseError as error:
                log.warning(
                    "heartbeat failed (%s)", type(error).__name__, extra={"session_id": self.session_id}
                )
                continue
            if not ours:
                await self.close(release=False, why="another connection took the session")
                return

    async def _expire_at(self, expires_at: datetime) -> None:
        await asyncio.sleep(max(0.0, (expires_at - utc_now()).total_seconds()))
        message = self.instructions.finish(SessionStatus.EXPIRED, [SessionStatus.EXPIRED.value])
        if message is not None:
            self._send(message)
            await asyncio.sleep(self._config.hangup_delay_s)
        await self.close(why="the session expired")

    def _erased(self) -> None:
        """The store refused a frame: the session's erasure was requested. Hang up now."""
        self._spawn(self.close(why="the session was erased"), "erased")

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self._config.connect_timeout_s)
        if self._pc.connectionState != "connected":
            await self.close(why="the peer did not connect in time")

    async def _hang_up_later(self) -> None:
        await asyncio.sleep(self._config.hangup_delay_s)
        await self.close(why="the session finished")
