"""Video-call rooms, the call agent's side alone (RoomCalls and RoomPeer in this process, no
broker): real protoo over a WebSocket, real ICE/DTLS/SRTP and VP8 both ways through a real
mediasoup 3.8.4 room (faceproof/testing/mediasoup_room.py; the ``room_server`` fixture builds or
reuses it), the subject a pymediasoup peer playing a real face video.

Faults a real room cannot be made to commit (a request never answered, a socket cut while the
room stays up, a handshake that redirects) are played by the stand-in of
tests/support/test_sfu.py; an unreachable room is a port nobody listens on."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from av import VideoFrame

from contracts.commands import JoinCall
from contracts.envelope import Event, utc_now
from contracts.events import (
    CallFailed,
    CallJoined,
    ChallengeIssued,
    FrameCaptured,
    ReadinessChecked,
    SessionFinished,
    SessionStarted,
)
from contracts.routing import EventKey
from contracts.values import ChallengeType, SessionStatus
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import PlaybackSource, SourceTrack
from infra.safe_fetch import FetchPolicy, IPAddress
from infra.storage import LocalObjectStore
from services.call_agent.catalog import load_catalog
from services.call_agent.connection import StreamConfig
from services.call_agent.instructions import Screen
from services.call_agent.room.call import CallConfig
from services.call_agent.room.errors import RequestTimeout, RoomError, RoomRefused
from services.call_agent.room.handler import RoomCalls
from services.call_agent.room.mediasoup import RoomConfig, RoomPeer
from services.call_agent.room.protoo import ProtooClient
from services.call_agent.video import InstructionTrack, LatestFrame
from tests.support.test_sfu import TestSfu, redirecting_room

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = pytest.mark.timeout(1800)

WAIT_S = 60.0  # generous: a loaded 2-core machine encodes VP8 both ways
#: The rooms listen on 127.0.0.1: allow-listed, as FACEPROOF_FETCH_ALLOW_HOSTS=127.0.0.1 does.
LOOPBACK = FetchPolicy.create("127.0.0.1")


class RecordingEvents:
    """The EventPublisher port (domain/ports.py), recording (in production: infra/publisher.py's
    Publisher)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Event]] = []

    async def event(self, event: Event, routing_key: str) -> None:
        self.published.append((routing_key, event))

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for _, e in self.published if isinstance(e, kind)]


async def until(predicate: Callable[[], bool], within_s: float = WAIT_S) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - polls state the call and the SFU own
            await asyncio.sleep(0.1)


def join_call(url: str, *, expires_in_s: float = 120.0, language: str = "en") -> JoinCall:
    return JoinCall(
        correlation_id="flow-1",
        flow_id="flow-1",
        session_id="session-1",
        ws_url=url,
        callback_base_url="https://controller.example/callbacks",  # type: ignore[arg-type]
        token="controller-token",
        language=language,
        expires_at=utc_now() + timedelta(seconds=expires_in_s),
    )


def config(*, request_timeout_s: float = 15.0, no_video_timeout_s: float = 30.0) -> CallConfig:
    return CallConfig(
        room=RoomConfig(request_timeout_s=request_timeout_s, address_policy=LOOPBACK),
        stream=StreamConfig(hangup_delay_s=0.2),
        no_video_timeout_s=no_video_timeout_s,
    )


@pytest.fixture
async def subject(media: Media) -> AsyncIterator[RoomSubject]:
    """The person in the call (joins when a test says so); hung up at the end."""
    person = RoomSubject(SourceTrack(PlaybackSource(media)), policy=LOOPBACK)
    yield person
    await person.leave()


def requests_of(room: MediasoupRoom, peer_id: str) -> list[str]:
    return [event["method"] for event in room.of("request", peerId=peer_id)]


async def test_peer_joins_consumes_the_subject_and_produces_a_track_the_subject_receives(
    room: MediasoupRoom, subject: RoomSubject, media: Media
) -> None:
    await subject.join(room.url("r", "subject"))
    client = ProtooClient(policy=LOOPBACK, request_timeout_s=15)
    frames: list[VideoFrame] = []
    failures: list[RoomError] = []
    latest = LatestFrame()

    async def consume(track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            latest.frame = frame
            frames.append(frame)

    tasks: list[asyncio.Task[None]] = []
    peer = RoomPeer(
        client,
        RoomConfig(request_timeout_s=15, address_policy=LOOPBACK),
        on_track=lambda track: tasks.append(asyncio.create_task(consume(track))),
        on_failure=failures.append,
    )
    await client.connect(room.url("r", "faceproof"))
    answer = await peer.join(InstructionTrack(latest, lambda: Screen(text="Turn your head to the left")))
    assert [p["id"] for p in answer["peers"]] == ["subject"]
    assert peer.producer_id

    await until(lambda: len(frames) >= 5 and subject.received_frames >= 5)
    picture = frames[-1].to_ndarray(format="bgr24")
    assert picture.shape == media.frames[0].shape  # the subject's camera picture, through mediasoup
    assert float(np.std(picture)) > 20  # a real picture, not a blank frame
    assert subject.last_frame is not None and subject.last_frame.height >= 240  # the agent's video
    assert failures == []

    await peer.leave()
    await client.close()
    for task in tasks:
        task.cancel()
    await room.wait_for(lambda: bool(room.of("peerClosed", peerId="faceproof")))
    assert requests_of(room, "faceproof")[:4] == [
        "getRouterRtpCapabilities",
        "createWebRtcTransport",
        "createWebRtcTransport",
        "join",
    ]
    assert "leaveRoom" in requests_of(room, "faceproof")
    # mediasoup forwarded each peer's video to the other
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject", kind="video")
    assert room.of("consuming", peerId="subject", producerPeerId="faceproof", kind="video")
    assert room.of("refused") == []


async def test_a_request_the_room_never_answers_times_out() -> None:
    """Injected fault (the stand-in): a room that hangs mid-protocol."""
    async with TestSfu(ignore_methods={"getRouterRtpCapabilities"}) as sfu:
        client = ProtooClient(policy=LOOPBACK, request_timeout_s=0.5)
        await client.connect(sfu.url())
        with pytest.raises(RequestTimeout):
            await client.request("getRouterRtpCapabilities")
        await client.close()


async def test_join_unanswered_fails_the_call_with_signalling_error(tmp_path: Path) -> None:
    """Injected fault (the stand-in): the room never answers ``join``."""
    events = RecordingEvents()
    async with TestSfu(ignore_methods={"join"}) as sfu:
        calls = RoomCalls(config(request_timeout_s=1.0), store=LocalObjectStore(tmp_path), events=events)
        await calls.start(join_call(sfu.url()))
        outcome = await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)
    assert outcome.failure is not None
    failed = events.of(CallFailed)
    assert [(e.reason, e.flow_id, e.session_id) for e in failed] == [
        ("SIGNALLING_ERROR", "flow-1", "session-1")
    ]  # type: ignore[attr-defined]
    assert events.of(CallJoined) == [] and events.of(SessionStarted) == []


async def test_an_unexpected_error_while_joining_ends_the_call_with_one_call_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fault: joining raises what no RoomError names (a room's answer nobody foresaw, a
    bug). The call ends at once with one CallFailed(SIGNALLING_ERROR) naming it, instead of its
    join task dying unseen and the call holding a slot until its deadline."""

    async def broken(self: RoomPeer, outbound: MediaStreamTrack) -> dict[str, object]:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(RoomPeer, "join", broken)
    events = RecordingEvents()
    async with TestSfu() as sfu:
        calls = RoomCalls(config(request_timeout_s=2.0), store=LocalObjectStore(tmp_path), events=events)
        await calls.start(join_call(sfu.url()))
        outcome = await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)
    assert outcome.failure is not None
    failed = events.of(CallFailed)
    assert [e.reason for e in failed] == ["SIGNALLING_ERROR"]  # type: ignore[attr-defined]
    assert failed[0].detail == "join failed (RuntimeError)"  # type: ignore[attr-defined]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_room_fails_with_room_unreachable(tmp_path: Path) -> None:
    events = RecordingEvents()
    calls = RoomCalls(config(request_timeout_s=2.0), store=LocalObjectStore(tmp_path), events=events)
    await calls.start(join_call(f"ws://127.0.0.1:{closed_port()}/?roomId=r&peerId=faceproof"))
    await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)  # connection refused
    assert [e.reason for e in events.of(CallFailed)] == ["ROOM_UNREACHABLE"]  # type: ignore[attr-defined]


async def test_no_video_fails_with_no_video(tmp_path: Path, room: MediasoupRoom) -> None:
    """The agent joins a room nobody else ever joins."""
    events = RecordingEvents()
    calls = RoomCalls(config(no_video_timeout_s=2.0), store=LocalObjectStore(tmp_path), events=events)
    await calls.start(join_call(room.url("empty", "faceproof")))
    outcome = await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)
    await room.wait_for(lambda: bool(room.of("peerClosed", peerId="faceproof")))  # it left
    assert outcome.failure is not None
    assert [e.reason for e in events.of(CallFailed)] == ["NO_VIDEO"]  # type: ignore[attr-defined]
    assert len(events.of(CallJoined)) == 1  # it joined; the subject never showed
    assert room.of("produced", peerId="faceproof", kind="video")  # and showed its instruction video
    assert events.of(SessionStarted) == [] and events.of(FrameCaptured) == []  # no session ran


#: The subject walks into the room this long after the agent joined it (issue 19's case).
LATE_S = 10.0


async def test_the_session_starts_when_a_late_subject_s_video_arrives(
    tmp_path: Path, room: MediasoupRoom, subject: RoomSubject
) -> None:
    """The subject joins the room 10 s after the agent: the agent joins at once (CallJoined), but
    the session (SessionStarted, the first challenge's clock in the liveness worker) starts only
    when the subject's first frame arrives, and every stored frame comes after it."""
    events = RecordingEvents()
    calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
    await calls.start(join_call(room.url("late", "faceproof")))
    await room.wait_for(lambda: bool(room.of("joined", peerId="faceproof")))
    joined_at = time.monotonic()
    await until(lambda: len(events.of(CallJoined)) == 1)
    await asyncio.sleep(LATE_S)
    assert events.of(SessionStarted) == [] and events.of(CallFailed) == []  # it waits
    await subject.join(room.url("late", "subject"))
    await until(lambda: len(events.of(SessionStarted)) == 1)
    waited = time.monotonic() - joined_at
    await until(lambda: len(events.of(FrameCaptured)) >= 3)
    await calls.close()
    assert waited >= LATE_S, f"the session started {waited:.1f} s after the join"
    started = events.of(SessionStarted)[0]
    frames = events.of(FrameCaptured)
    assert all(f.captured_at >= started.occurred_at for f in frames)  # type: ignore[attr-defined]
    assert [f.sequence for f in frames][:3] == [0, 1, 2]  # type: ignore[attr-defined]
    assert events.of(CallFailed) == []


async def test_socket_dropped_mid_call_fails_with_socket_dropped(tmp_path: Path) -> None:
    """Injected fault (the stand-in): the socket is cut while the room stays up and refuses it
    again (a real room can only be killed: tests/e2e/test_mediasoup_room_e2e.py's room-killed)."""
    events = RecordingEvents()
    async with TestSfu() as sfu:
        calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
        await calls.start(join_call(sfu.url()))
        await until(lambda: len(events.of(FrameCaptured)) >= 2)
        await sfu.drop()
        outcome = await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)
    assert outcome.failure is not None
    assert [e.reason for e in events.of(CallFailed)] == ["SOCKET_DROPPED"]  # type: ignore[attr-defined]
    assert calls.calls == {}


def session_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


async def test_call_runs_the_session_pipeline_and_leaves_when_the_session_finishes(
    tmp_path: Path, room: MediasoupRoom, subject: RoomSubject
) -> None:
    events = RecordingEvents()
    store = LocalObjectStore(tmp_path)
    calls = RoomCalls(config(), store=store, events=events)
    await calls.start(join_call(room.url("r", "faceproof"), language="es"))
    await calls.start(join_call(room.url("r", "faceproof"), language="es"))  # a redelivery: ignored
    await room.wait_for(lambda: bool(room.of("produced", peerId="faceproof")))
    await subject.join(room.url("r", "subject"))
    await until(lambda: len(events.of(FrameCaptured)) >= 3)

    started = events.of(SessionStarted)
    assert len(started) == 1 and started[0].session_id == "session-1"  # type: ignore[attr-defined]
    assert len(events.of(CallJoined)) == 1 and len(room.of("joined", peerId="faceproof")) == 1
    frame = events.of(FrameCaptured)[0]
    assert frame.sequence == 0 and frame.storage_key == "sessions/session-1/frames/00000000.jpg"  # type: ignore[attr-defined]
    image = cv2.imdecode(np.frombuffer(await store.get(frame.storage_key), np.uint8), cv2.IMREAD_COLOR)  # type: ignore[attr-defined]
    assert image is not None and image.shape[:2] == (480, 480)  # fitted into 640x480, aspect kept
    assert [e.sequence for e in events.of(FrameCaptured)][:3] == [0, 1, 2]  # type: ignore[attr-defined]
    call = calls.calls["flow-1"]
    spanish = load_catalog("es")

    # The liveness worker's events drive the instruction video the subject receives: get ready
    # (the pre-checks), then the first challenge.
    readiness = ReadinessChecked(correlation_id="session-1", session_id="session-1", problems=["TOO_DARK"])
    await calls.on_event(EventKey.READINESS_CHECKED, session_event(readiness))
    assert call.screen().text == spanish.text("status.get_ready")
    assert call.screen().challenge is None and call.screen().deadline is None  # no clock yet
    issued = ChallengeIssued(
        correlation_id="session-1",
        session_id="session-1",
        index=0,
        count=2,
        challenge=ChallengeType.TURN_LEFT,
        deadline_ms=8000,
    )
    await calls.on_event(EventKey.CHALLENGE_ISSUED, session_event(issued))
    assert call.screen().challenge is ChallengeType.TURN_LEFT
    assert call.screen().text == spanish.challenge(ChallengeType.TURN_LEFT)  # Spanish catalog
    received = subject.received_frames
    await until(lambda: subject.received_frames > received + 3)
    # frames tell the liveness worker what the subject could see: nothing before, then challenge 0
    assert [e.shown for e in events.of(FrameCaptured)][:3] == [-1, -1, -1]  # type: ignore[attr-defined]
    captured = len(events.of(FrameCaptured))
    await until(lambda: len(events.of(FrameCaptured)) > captured + 2)
    assert events.of(FrameCaptured)[-1].shown == 0  # type: ignore[attr-defined]

    finished = SessionFinished(
        correlation_id="session-1", session_id="session-1", status=SessionStatus.SUCCEEDED
    )
    await calls.on_event(EventKey.SESSION_FINISHED, session_event(finished))
    outcome = await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)
    assert outcome.failure is None
    await room.wait_for(lambda: bool(room.of("peerClosed", peerId="faceproof")))
    assert "leaveRoom" in requests_of(room, "faceproof")
    assert room.of("refused") == []
    assert events.of(CallFailed) == []
    assert call.screen().final and call.screen().succeeded


# --------------------------------------------------------------------------- the address policy


class Resolver:
    """A resolver answering fixed addresses for test names (what DNS would answer), counting calls."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        return [ipaddress.ip_address(self.answers[host])]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ws://169.254.169.254/protoo", "169.254.169.254 resolves to a link-local address"),
        ("wss://10.0.0.1:4443/?roomId=r", "10.0.0.1 resolves to a private address"),
        ("ws://[::1]:4443/", "::1 resolves to a loopback address"),
        ("ws://rooms.attacker.test/?roomId=r", "rooms.attacker.test resolves to a private address"),
        ("ws://user:secret@rooms.attacker.test/", "credentials in the URL are not allowed"),
        ("http://rooms.attacker.test/", "scheme 'http' is not allowed (ws or wss only)"),
    ],
)
async def test_rooms_at_refused_addresses_are_never_opened(url: str, why: str) -> None:
    # rooms.attacker.test is a public-looking name whose DNS answer is a private address.
    resolver = Resolver({"rooms.attacker.test": "10.20.30.40"})
    client = ProtooClient(policy=LOOPBACK, request_timeout_s=5, resolve=resolver)
    started = time.monotonic()
    with pytest.raises(RoomRefused) as refused:
        await client.connect(url)
    assert refused.value.detail == f"the room URL is refused: {why}"
    assert refused.value.reason.value == "ROOM_REFUSED"
    assert time.monotonic() - started < 1.0  # refused before any connection attempt
    assert not client.connected


async def test_a_loopback_room_is_refused_unless_allow_listed(room: MediasoupRoom) -> None:
    with pytest.raises(RoomRefused, match=re.escape("127.0.0.1 resolves to a loopback address")):
        await ProtooClient(policy=FetchPolicy(), request_timeout_s=5).connect(room.url("r", "faceproof"))
    await asyncio.sleep(0.5)  # a handshake the room saw would be on its stdout by now
    assert room.of("connectionrequest") == []  # the room never saw a handshake


async def test_the_socket_goes_to_the_checked_address_and_keeps_the_name(room: MediasoupRoom) -> None:
    resolver = Resolver({"rooms.controller.test": "127.0.0.1"})
    client = ProtooClient(policy=LOOPBACK, request_timeout_s=5, resolve=resolver)
    await client.connect(f"ws://rooms.controller.test:{room.port}/?roomId=r&peerId=faceproof")
    assert client.connected
    assert await client.request("getRouterRtpCapabilities")  # a working protoo socket
    await client.close()
    hosts = [event["host"] for event in room.of("connectionrequest")]
    assert hosts == [f"rooms.controller.test:{room.port}"]  # Host: the name, not the IP
    assert resolver.calls == ["rooms.controller.test"]  # resolved once: no second lookup to rebind


async def test_a_redirect_to_a_private_address_is_refused_and_a_checked_one_followed(
    room: MediasoupRoom,
) -> None:
    """The redirecting handshake is the stand-in's (no real room answers so); the checked target
    it redirects to is the real room."""
    async with redirecting_room("ws://10.0.0.1/room") as url:
        with pytest.raises(RoomRefused, match=re.escape("10.0.0.1 resolves to a private address")):
            await ProtooClient(policy=LOOPBACK, request_timeout_s=5).connect(url)
    async with redirecting_room(room.url("r", "faceproof")) as url:
        client = ProtooClient(policy=LOOPBACK, request_timeout_s=5)
        await client.connect(url)
        assert client.connected
        assert await client.request("getRouterRtpCapabilities")
        await client.close()
    assert len(room.of("connected", roomId="r", peerId="faceproof")) == 1
    async with redirecting_room("/again") as url:  # a redirect loop ends too
        with pytest.raises(RoomRefused, match="redirected more than 3 times"):
            await ProtooClient(policy=LOOPBACK, request_timeout_s=5).connect(url)


async def test_a_refused_room_fails_the_call_once_with_room_refused(tmp_path: Path) -> None:
    events = RecordingEvents()
    calls = RoomCalls(config(request_timeout_s=5.0), store=LocalObjectStore(tmp_path), events=events)
    await calls.start(join_call("ws://169.254.169.254/latest/meta-data?roomId=r&peerId=p"))
    outcome = await asyncio.wait_for(calls.wait("flow-1"), WAIT_S)
    assert isinstance(outcome.failure, RoomRefused)
    failed = events.of(CallFailed)
    assert [(e.reason, e.detail) for e in failed] == [  # type: ignore[attr-defined]
        ("ROOM_REFUSED", "the room URL is refused: 169.254.169.254 resolves to a link-local address")
    ]
    assert events.of(CallJoined) == [] and events.of(SessionStarted) == []
