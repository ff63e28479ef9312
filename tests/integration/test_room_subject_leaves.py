"""A subject who leaves a real mediasoup room during the session (tests/support/sfu/room.js, built
by scripts/mediasoup.sh): the call agent's side alone (RoomCalls, no broker), the subject a
pymediasoup peer playing a real face video.

Before: the room closed the agent's consumer, the agent never noticed, and the session ran on
until it expired (EXPIRED); a subject who came back got a new consumer whose frames carried on the
old numbering, so the liveness worker judged them against the old challenge's clock: TIMEOUT.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from contracts.events import CallFailed, ChallengeIssued, FrameCaptured, SessionStarted
from contracts.routing import CONNECTION_SEQUENCE_STRIDE, EventKey
from contracts.values import ChallengeType
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject, run_bounded
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import PlaybackSource, SourceTrack
from infra.storage import LocalObjectStore
from services.call_agent.connection import StreamConfig
from services.call_agent.room.call import CallConfig
from services.call_agent.room.handler import RoomCalls
from services.call_agent.room.mediasoup import RoomConfig
from tests.integration.test_room_calls import LOOPBACK, RecordingEvents, join_call, until

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = [pytest.mark.timeout(1800), pytest.mark.usefixtures("room_server")]

RETURN_S = 4.0


def config() -> CallConfig:
    return CallConfig(
        room=RoomConfig(request_timeout_s=15.0, address_policy=LOOPBACK),
        stream=StreamConfig(hangup_delay_s=0.2),
        no_video_timeout_s=60.0,
        return_timeout_s=RETURN_S,
    )


def issued() -> bytes:
    event = ChallengeIssued(
        correlation_id="session-1",
        session_id="session-1",
        index=0,
        count=2,
        challenge=ChallengeType.TURN_LEFT,
        deadline_ms=6000,
    )
    return event.model_dump_json().encode()


async def _call_with_a_subject(
    tmp_path: Path, media: Media, *, come_back: bool
) -> tuple[RecordingEvents, RoomCalls, MediasoupRoom]:
    events = RecordingEvents()
    calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
    async with MediasoupRoom() as room:
        await calls.start(join_call(room.url("r", "faceproof")))
        await room.wait_for(lambda: bool(room.of("produced", peerId="faceproof")), 60)
        subject = RoomSubject(SourceTrack(PlaybackSource(media)), policy=LOOPBACK)
        await subject.join(room.url("r", "subject"))
        await until(lambda: len(events.of(FrameCaptured)) >= 3)
        await calls.on_event(EventKey.CHALLENGE_ISSUED, issued())  # challenge 1 is on screen
        await subject.leave()
        if come_back:
            await asyncio.sleep(RETURN_S / 4)
            again = RoomSubject(SourceTrack(PlaybackSource(media)), policy=LOOPBACK)
            await again.join(room.url("r", "subject-again"))
            await until(
                lambda: any(e.sequence >= CONNECTION_SEQUENCE_STRIDE for e in events.of(FrameCaptured))  # type: ignore[attr-defined]
            )
            await asyncio.sleep(RETURN_S)  # past the limit: no SUBJECT_LEFT comes now
            await calls.close()
            await again.leave()
        else:
            await asyncio.wait_for(calls.wait("flow-1"), 60)
    return events, calls, room


def test_a_subject_who_leaves_and_stays_away_fails_the_call_naming_the_challenge(
    tmp_path: Path, media: Media
) -> None:
    events, calls, room = run_bounded(_call_with_a_subject(tmp_path, media, come_back=False))
    failed = events.of(CallFailed)
    assert [e.reason for e in failed] == ["SUBJECT_LEFT"]  # type: ignore[attr-defined]
    assert "challenge 1 of 2 (TURN_LEFT)" in failed[0].detail  # type: ignore[attr-defined]
    assert room.of("peerClosed", peerId="subject")
    assert calls.calls == {}


def test_a_subject_who_comes_back_in_time_carries_on_as_a_new_connection(
    tmp_path: Path, media: Media
) -> None:
    events, _, room = run_bounded(_call_with_a_subject(tmp_path, media, come_back=True))
    assert events.of(CallFailed) == []
    assert len(events.of(SessionStarted)) == 1  # one session: the subject's return is not a new one
    sequences = [e.sequence for e in events.of(FrameCaptured)]  # type: ignore[attr-defined]
    before = [s for s in sequences if s < CONNECTION_SEQUENCE_STRIDE]
    after = [s for s in sequences if s >= CONNECTION_SEQUENCE_STRIDE]
    assert before[:3] == [0, 1, 2] and after[0] == CONNECTION_SEQUENCE_STRIDE
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject-again", kind="video")


def test_a_room_that_offers_tcp_candidates_only_fails_at_once_saying_why(tmp_path: Path) -> None:
    """mediasoup with forceTcp: aiortc's ICE (aioice 0.13) gathers and pairs UDP candidates only, so
    without a TURN relay the media could never flow; the call fails at the transport, not after an
    ICE timeout, and says so."""

    async def scenario() -> RecordingEvents:
        events = RecordingEvents()
        calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
        async with MediasoupRoom("--force-tcp") as room:
            await calls.start(join_call(room.url("tcp", "faceproof")))
            await asyncio.wait_for(calls.wait("flow-1"), 60)
        return events

    events = run_bounded(scenario())
    failed = events.of(CallFailed)
    assert [e.reason for e in failed] == ["SIGNALLING_ERROR"]  # type: ignore[attr-defined]
    assert "TCP candidates only" in failed[0].detail  # type: ignore[attr-defined]


def test_a_room_whose_ice_candidates_name_an_internal_address_is_refused(tmp_path: Path) -> None:
    """A room is any server a caller names; its createWebRtcTransport answer names the addresses
    the agent then sends STUN checks and media to. A real mediasoup room whose transports announce
    the cloud metadata address is refused at once, saying why (the same room announcing its own
    allow-listed 127.0.0.1 runs every other room test here)."""

    async def scenario() -> RecordingEvents:
        events = RecordingEvents()
        calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
        async with MediasoupRoom("--announced-ip", "169.254.169.254") as room:
            await calls.start(join_call(room.url("ice", "faceproof")))
            await asyncio.wait_for(calls.wait("flow-1"), 60)
        return events

    failed = run_bounded(scenario()).of(CallFailed)
    assert [e.reason for e in failed] == ["ROOM_REFUSED"]  # type: ignore[attr-defined]
    why = "every ICE candidate was refused (169.254.169.254 resolves to a link-local address)"
    assert why in failed[0].detail  # type: ignore[attr-defined]
