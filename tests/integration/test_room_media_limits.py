"""What a room may make the call agent receive, against a real mediasoup room
(tests/support/sfu/room.js; the agent's RoomCalls in this process, the people pymediasoup peers).

A room is any server a caller names, and anyone in it can produce. Before these limits the agent
consumed whatever the room offered: an audio consumer (its aiortc track queues decoded frames that
nobody reads: memory grows for the whole call), a second peer's video (its frames interleaved into
the one liveness session), a reused consumer id (the first consumer orphaned); and it stored
camera frames of any size (a hosted session hangs up past 1920x1080 pixels).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from aiortc.mediastreams import AudioStreamTrack

from contracts.events import CallFailed, FrameCaptured, SessionStarted
from contracts.routing import CONNECTION_SEQUENCE_STRIDE
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import PlaybackSource, SourceTrack
from infra.storage import LocalObjectStore
from services.call_agent.connection import StreamConfig
from services.call_agent.room import mediasoup
from services.call_agent.room.call import CallConfig
from services.call_agent.room.errors import SignallingError
from services.call_agent.room.handler import RoomCalls
from services.call_agent.room.mediasoup import RoomConfig
from services.call_agent.room.protoo import Data
from tests.integration.test_room_calls import LOOPBACK, RecordingEvents, join_call, until

#: The first run on a machine builds mediasoup's worker in the room_server fixture (~7-13 min).
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture
async def people() -> AsyncIterator[list[RoomSubject]]:
    """Everyone a test brings into the room; all hung up at the end."""
    joined: list[RoomSubject] = []
    yield joined
    for person in joined:
        await person.leave()


def config() -> CallConfig:
    return CallConfig(
        room=RoomConfig(request_timeout_s=15.0, address_policy=LOOPBACK),
        stream=StreamConfig(hangup_delay_s=0.2),
        no_video_timeout_s=60.0,
        return_timeout_s=60.0,
    )


async def bring(people: list[RoomSubject], room: MediasoupRoom, peer_id: str, track: Any) -> RoomSubject:
    person = RoomSubject(track, policy=LOOPBACK)
    people.append(person)
    await person.join(room.url("r", peer_id))
    return person


def camera(media: Media) -> SourceTrack:
    return SourceTrack(PlaybackSource(media))


async def start_call(tmp_path: Path, room: MediasoupRoom) -> tuple[RecordingEvents, RoomCalls]:
    events = RecordingEvents()
    calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
    await calls.start(join_call(room.url("r", "faceproof")))
    await room.wait_for(lambda: bool(room.of("produced", peerId="faceproof")))
    return events, calls


async def frames_go_on(events: RecordingEvents, more: int = 3) -> None:
    count = len(events.of(FrameCaptured))
    await until(lambda: len(events.of(FrameCaptured)) >= count + more)


def offered_audio(room: MediasoupRoom, producer_id: str) -> bool:
    """The room decided what to do with the audio producer for the agent."""
    return bool(
        room.of("cannotConsume", peerId="faceproof", producerId=producer_id)
        or room.of("consuming", peerId="faceproof", kind="audio")
        or room.of("newConsumerRefused", peerId="faceproof")
    )


async def call_with_a_voice(
    tmp_path: Path, room: MediasoupRoom, media: Media, people: list[RoomSubject]
) -> tuple[RecordingEvents, str]:
    """A call whose room holds the subject's camera and another peer's microphone, run until the
    room offered the agent that audio (or could not) and the frames went on; the events and the
    audio producer's id. The agent consumed no audio."""
    events, calls = await start_call(tmp_path, room)
    await bring(people, room, "subject", camera(media))
    await bring(people, room, "subject-voice", AudioStreamTrack())
    await until(lambda: len(events.of(FrameCaptured)) >= 3)
    produced = room.of("produced", peerId="subject-voice", kind="audio")
    assert produced
    await room.wait_for(lambda: offered_audio(room, produced[0]["producerId"]))
    await frames_go_on(events)
    await calls.close()
    assert room.of("consuming", peerId="faceproof", kind="audio") == []
    return events, produced[0]["producerId"]


async def test_the_agent_never_receives_audio_its_join_does_not_ask_for_any(
    tmp_path: Path, room: MediasoupRoom, media: Media, people: list[RoomSubject]
) -> None:
    """A peer producing audio (the subject's microphone): the agent's join advertises no audio
    codec, so mediasoup cannot make a consumer of it for the agent, and the call goes on."""
    events, producer = await call_with_a_voice(tmp_path, room, media, people)
    assert room.of("cannotConsume", peerId="faceproof", producerId=producer)
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject", kind="video")
    assert events.of(CallFailed) == []


async def test_audio_a_room_offers_anyway_is_refused_and_the_call_goes_on(
    tmp_path: Path,
    room: MediasoupRoom,
    media: Media,
    people: list[RoomSubject],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A room that offers audio whatever the join said (here the real room, made to by an agent
    that advertises audio as it used to): newConsumer for audio is answered ok:false."""
    monkeypatch.setattr(mediasoup, "_receivable", lambda capabilities: capabilities, raising=False)
    events, _ = await call_with_a_voice(tmp_path, room, media, people)
    refused = room.of("newConsumerRefused", peerId="faceproof")
    assert len(refused) == 1 and "audio" in refused[0]["reason"]
    assert events.of(CallFailed) == []


async def test_a_second_video_is_refused_while_the_subjects_camera_is_live(
    tmp_path: Path, room: MediasoupRoom, media: Media, people: list[RoomSubject]
) -> None:
    """Another peer's video while the subject's is consumed: refused (its frames would join the
    subject's in the one session). Once the subject's closes, a new one is accepted (the subject
    coming back)."""
    events, calls = await start_call(tmp_path, room)
    subject = await bring(people, room, "subject", camera(media))
    await until(lambda: len(events.of(FrameCaptured)) >= 3)
    await bring(people, room, "intruder", camera(media))
    await room.wait_for(
        lambda: bool(
            room.of("newConsumerRefused", peerId="faceproof")
            or room.of("consuming", peerId="faceproof", producerPeerId="intruder")
        )
    )
    await frames_go_on(events)
    assert room.of("consuming", peerId="faceproof", producerPeerId="intruder") == []
    refused = room.of("newConsumerRefused", peerId="faceproof")
    assert len(refused) == 1 and "a video is already consumed" in refused[0]["reason"]

    await subject.leave()  # the subject's consumer closes: the next video is theirs again
    await bring(people, room, "subject-again", camera(media))
    await until(
        lambda: any(e.sequence >= CONNECTION_SEQUENCE_STRIDE for e in events.of(FrameCaptured))  # type: ignore[attr-defined]
    )
    await calls.close()
    assert room.of("consuming", peerId="faceproof", producerPeerId="subject-again", kind="video")
    assert len(events.of(SessionStarted)) == 1
    assert events.of(CallFailed) == []


async def test_a_reused_consumer_id_is_refused_and_the_first_consumer_kept(
    tmp_path: Path, room: MediasoupRoom, media: Media, people: list[RoomSubject]
) -> None:
    """The room's newConsumer for the subject's video, delivered again with the same consumer id
    (replayed into the agent's request handler: the real room never reuses one): refused, and
    the first consumer stays the subject's camera."""
    events = RecordingEvents()
    calls = RoomCalls(config(), store=LocalObjectStore(tmp_path), events=events)
    await calls.start(join_call(room.url("r", "faceproof")))
    peer = calls.calls["flow-1"]._peer
    client = peer._protoo
    seen: list[Data] = []
    handle = client.on_request

    async def recording(method: str, data: Data) -> Data:
        if method == "newConsumer":
            seen.append(dict(data))
        return await handle(method, data)

    client.on_request = recording
    await room.wait_for(lambda: bool(room.of("produced", peerId="faceproof")))
    await bring(people, room, "subject", camera(media))
    await until(lambda: len(events.of(FrameCaptured)) >= 3)
    assert len(seen) == 1
    first = peer._consumers[seen[0]["id"]]
    with pytest.raises(SignallingError, match="the consumer id is already in use"):
        await peer.handle_request("newConsumer", seen[0])
    assert peer._consumers == {seen[0]["id"]: first}
    await frames_go_on(events)
    await calls.close()
    assert events.of(CallFailed) == []


async def test_frames_larger_than_a_hosted_session_accepts_fail_the_call_before_any_is_stored(
    tmp_path: Path, room: MediasoupRoom, media: Media, people: list[RoomSubject]
) -> None:
    """The subject's camera sends 1920x1088 frames (over MAX_FRAME_PIXELS, 1920x1080): one
    CallFailed(SIGNALLING_ERROR) saying so, and no frame stored or announced."""
    events, calls = await start_call(tmp_path, room)
    big = PlaybackSource(media, transform=lambda image, _: cv2.resize(image, (1920, 1088)))
    await bring(people, room, "subject", SourceTrack(big, fps=4))
    await until(lambda: bool(events.of(CallFailed)) or len(events.of(FrameCaptured)) >= 2)
    if not events.of(CallFailed):
        await calls.close()
    else:
        await asyncio.wait_for(calls.wait("flow-1"), 60)
    failed = events.of(CallFailed)
    assert [e.reason for e in failed] == ["SIGNALLING_ERROR"]  # type: ignore[attr-defined]
    assert "1920x1088" in failed[0].detail  # type: ignore[attr-defined]
    assert events.of(FrameCaptured) == [] and events.of(SessionStarted) == []
    assert room.of("peerClosed", peerId="faceproof")  # it left
