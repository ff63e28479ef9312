"""The room socket's limits: no compression, and a message size that fits protoo with room to spare.

websockets negotiates permessage-deflate by default, and its ``max_size`` applies after
decompression: a room could send a ~1 KB frame that inflates into 1 MiB of JSON, parsed on the
event loop the calls share (~47 ms each). The real mediasoup room (protoo-server on websocket-node)
has no permessage-deflate, so the bomb itself is played by a websockets server here that negotiates
it whenever a client offers it; the real room shows the offer the agent makes and the largest
message a real call brings.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiortc import MediaStreamTrack
from websockets.asyncio.server import ServerConnection, serve

from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject
from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import PlaybackSource, SourceTrack
from services.call_agent.instructions import Screen
from services.call_agent.room.mediasoup import RoomConfig, RoomPeer
from services.call_agent.room.protoo import MAX_MESSAGE_BYTES, ProtooClient
from services.call_agent.video import InstructionTrack, LatestFrame
from tests.integration.test_room_calls import LOOPBACK, until
from tests.paths import DATA_DIR

pytestmark = pytest.mark.timeout(1800)


async def test_the_agent_offers_no_compression_and_a_real_call_fits_the_size_limit_many_times(
    room: MediasoupRoom,
) -> None:
    media = Media.from_path(DATA_DIR / "video" / "liveportrait_d3.mp4", max_seconds=2.0)
    subject = RoomSubject(SourceTrack(PlaybackSource(media)), policy=LOOPBACK)
    await subject.join(room.url("r", "subject"))
    client = ProtooClient(policy=LOOPBACK, request_timeout_s=15)
    sizes: list[tuple[int, str]] = []
    dispatch = client._dispatch

    def measuring(raw: str | bytes) -> None:
        message = json.loads(raw)
        sizes.append((len(raw), str(message.get("method", "response"))))
        dispatch(raw)

    client._dispatch = measuring  # type: ignore[method-assign]
    tracks: list[MediaStreamTrack] = []
    peer = RoomPeer(
        client,
        RoomConfig(request_timeout_s=15, address_policy=LOOPBACK),
        on_track=tracks.append,
        on_failure=lambda error: None,
    )
    await client.connect(room.url("r", "faceproof"))
    socket = client._socket
    assert socket is not None and socket.request is not None
    assert "Sec-WebSocket-Extensions" not in socket.request.headers  # no permessage-deflate offered
    await peer.join(InstructionTrack(LatestFrame(), lambda: Screen(text="")))
    await until(lambda: bool(tracks))
    await peer.leave()
    await client.close()
    await subject.leave()
    largest = max(sizes)
    print(f"largest message from the real room: {largest[0]} bytes ({largest[1]})")
    assert largest[0] * 16 < MAX_MESSAGE_BYTES  # getRouterRtpCapabilities' answer, a few KB


async def test_a_compressed_bomb_is_not_inflated_and_an_oversized_message_drops_the_socket() -> None:
    """A websockets room that would negotiate permessage-deflate and sends 600 KiB of JSON
    (~1 KB compressed): the agent offers no compression, so the room must send all 600 KiB, and
    that is past the limit: the agent closes the socket (1009) and the message is never parsed."""
    offered: list[str | None] = []
    sent = asyncio.Event()
    bomb = json.dumps({"notification": True, "method": "x", "data": {"pad": " " * (600 * 1024)}})

    async def handler(connection: ServerConnection) -> None:
        assert connection.request is not None
        offered.append(connection.request.headers.get("Sec-WebSocket-Extensions"))
        await connection.send(bomb)
        sent.set()
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["protoo"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        client = ProtooClient(policy=LOOPBACK, request_timeout_s=5)
        notified: list[str] = []
        client.on_notification = lambda method, data: notified.append(method)
        await client.connect(f"ws://127.0.0.1:{port}/?roomId=r&peerId=faceproof")
        await asyncio.wait_for(sent.wait(), 10)
        await asyncio.wait_for(client.dropped.wait(), 10)
        socket = client._socket
        await client.close()
    assert offered == [None]
    assert notified == []
    assert socket is not None and socket.protocol.close_sent is not None
    assert socket.protocol.close_sent.code == 1009  # message too big: closed by the agent
