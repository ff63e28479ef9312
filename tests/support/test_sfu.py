"""A stand-in for a mediasoup room, kept only for injected protocol faults: a protoo WebSocket
server with real WebRTC media that can be told to misbehave in ways a real mediasoup room cannot
be made to. Ordinary calls run against the real mediasoup 3.8.4 room
(faceproof/testing/mediasoup_room.py): tests/integration/test_room_calls.py, test_room_broker.py,
test_room_subject_leaves.py, test_browser_room.py, tests/e2e/test_call_flow_e2e.py and
test_mediasoup_room_e2e.py.

It plays one room of mediasoup-demo's protocol with aiortc's ORTC objects instead of mediasoup's
worker:

- signalling: protoo JSON over a ``websockets`` server (subprotocol ``protoo``) on 127.0.0.1,
  ``?roomId=..&peerId=..`` in the URL; getRouterRtpCapabilities, createWebRtcTransport,
  connectWebRtcTransport, join, produce, resumeConsumer, leaveRoom; a ``newConsumer`` REQUEST to
  the peer for the subject's video after it joined.
- media: per transport an ICE-lite agent (aioice answering checks, selecting the pair the peer
  nominates, as mediasoup does), a real DTLS-SRTP transport (RTCDtlsTransport), an RTCRtpSender
  playing a real face video (VP8, ~8 fps) and an RTCRtpReceiver decoding what the peer produces.

Who uses it, and why (every other call test runs through the real room):

- :meth:`TestSfu.drop` (a socket cut without a close handshake while the room stays up and
  refuses reconnects: a network cut; the real room can only be killed, which
  tests/e2e/test_mediasoup_room_e2e.py's room-killed case does):
  tests/e2e/test_call_flow_e2e.py ``test_a_dropped_socket_ends_in_a_failure_callback``,
  tests/integration/test_room_calls.py ``test_socket_dropped_mid_call_fails_with_socket_dropped``,
  tests/integration/test_room_broker.py ``test_socket_dropped_over_the_broker_publishes_call_failed``.
- ``ignore_methods`` (requests never answered: a room that hangs mid-protocol; a real room answers
  or refuses every request):
  tests/integration/test_room_calls.py ``test_a_request_the_room_never_answers_times_out``,
  ``test_join_unanswered_fails_the_call_with_signalling_error``.
- :func:`redirecting_room` (a room whose WebSocket handshake redirects, the SSRF attack; no
  protoo server answers a handshake with a 3xx):
  tests/e2e/test_call_flow_e2e.py
  ``test_a_room_that_redirects_to_a_private_address_ends_in_one_failure_callback``,
  tests/integration/test_room_calls.py
  ``test_a_redirect_to_a_private_address_is_refused_and_a_checked_one_followed`` (the redirect
  only: the checked target it redirects to is the real room).
What it does NOT prove: mediasoup's own SDP-less RTP handling (RTX, simulcast, header extension
rewriting, BWE), TCP candidates, TURN, or a browser's encoder on the other side. See docs/rooms.md.

Controls for tests: ``ignore_methods`` (requests never answered), :meth:`TestSfu.drop` (abort
every socket and refuse new ones); the subject is ``video`` looped. Observations:
``received_frames`` (decoded frames of the peer's produced video), ``last_received``, ``methods``,
``joined``, ``left``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import av
import numpy as np
from aioice import Candidate, stun
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import (
    MediaStreamTrack,
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from av import VideoFrame
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.paths import DATA_DIR

__all__ = ["FACE_VIDEO", "TestSfu", "face_frames", "redirecting_room"]

log = logging.getLogger("tests.test_sfu")

FACE_VIDEO = DATA_DIR / "video" / "liveportrait_d3.mp4"
VIDEO_PT = 101
VIDEO_FPS = 8
_CLOCK = 90_000

ROUTER_RTP_CAPABILITIES: dict[str, Any] = {
    "codecs": [
        {
            "kind": "video",
            "mimeType": "video/VP8",
            "clockRate": _CLOCK,
            "preferredPayloadType": VIDEO_PT,
            "parameters": {},
            "rtcpFeedback": [
                {"type": "nack", "parameter": ""},
                {"type": "nack", "parameter": "pli"},
                {"type": "ccm", "parameter": "fir"},
                {"type": "goog-remb", "parameter": ""},
            ],
        }
    ],
    "headerExtensions": [],
}


def face_frames(path: Path = FACE_VIDEO, *, fps: int = VIDEO_FPS, seconds: float = 6.0) -> list[np.ndarray]:
    """RGB frames of a real face video, resampled to ``fps`` (decoded once, looped by the track)."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 30)
        step = max(1, round(rate / fps))
        for index, frame in enumerate(container.decode(stream)):
            if index % step == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= fps * seconds:
                break
    if not frames:
        raise RuntimeError(f"no frames in {path}")
    return frames


class FaceVideoTrack(MediaStreamTrack):
    """The subject's camera: a real face video, looped, at ``fps``."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> None:
        super().__init__()
        self._frames = frames
        self._fps = fps
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._count / self._fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = VideoFrame.from_ndarray(self._frames[self._count % len(self._frames)], format="rgb24")
        frame.pts = self._count * (_CLOCK // self._fps)
        frame.time_base = fractions.Fraction(1, _CLOCK)
        self._count += 1
        return frame


class LiteConnection(Connection):  # type: ignore[misc]
    """aioice as an ICE-lite agent (what mediasoup is): answer the peer's checks, never check
    ourselves, and use the pair the peer nominates (USE-CANDIDATE). The peer's own ICE
    credentials are never signalled in mediasoup's protocol, and a lite agent needs none."""

    def __init__(self) -> None:
        super().__init__(ice_controlling=False, use_ipv6=False)
        self._lite_nominated = asyncio.Event()

    async def gather_candidates(self) -> None:
        """Host candidates on 127.0.0.1 only, where the real room listens (tests/support/sfu/room.js)
        and what the tests' address policy allows (aioice leaves loopback out by default)."""
        if not self._local_candidates_start:
            self._local_candidates_start = True
            for component in self._components:
                self._local_candidates += await self.get_component_candidates(
                    component=component, addresses=["127.0.0.1"]
                )
            self._local_candidates_end = True

    def _valid_username(self, username: str) -> bool:
        local, colon, _ = username.partition(":")
        return colon == ":" and local == self.local_username

    def request_received(self, message: stun.Message, addr: tuple[str, int], protocol: StunProtocol) -> None:
        if self._closing:
            return
        if (
            message.message_method != stun.Method.BINDING
            or "USERNAME" not in message.attributes
            or "MESSAGE-INTEGRITY" not in message.attributes
        ):
            self.respond_error(message, addr, protocol, (400, "Bad Request"))
            return
        if not (
            self._valid_username(message.attributes["USERNAME"])
            and message.check_message_integrity(self.local_password.encode("utf8"))
        ):
            self.respond_error(message, addr, protocol, (401, "Unauthenticated"))
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self.local_password.encode("utf8"))
        protocol.send_stun(response, addr)
        if "USE-CANDIDATE" in message.attributes:
            component = protocol.local_candidate.component
            remote = Candidate(
                foundation=secrets.token_hex(5),
                component=component,
                transport="udp",
                priority=message.attributes.get("PRIORITY", 0),
                host=addr[0],
                port=addr[1],
                type="prflx",
            )
            self._nominated[component] = CandidatePair(protocol, remote)
            self._lite_nominated.set()

    async def connect(self) -> None:
        await self._lite_nominated.wait()


@dataclass
class SfuTransport:
    id: str
    gatherer: RTCIceGatherer
    ice: RTCIceTransport
    dtls: RTCDtlsTransport
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    async def create(cls) -> SfuTransport:
        gatherer = RTCIceGatherer(iceServers=[])
        gatherer._connection = LiteConnection()  # the gatherer's agent, made lite
        await gatherer.gather()
        ice = RTCIceTransport(gatherer)
        dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
        return cls(id=secrets.token_hex(8), gatherer=gatherer, ice=ice, dtls=dtls)

    def describe(self) -> dict[str, Any]:
        ice = self.gatherer.getLocalParameters()
        dtls = self.dtls.getLocalParameters()
        return {
            "id": self.id,
            "iceParameters": {
                "usernameFragment": ice.usernameFragment,
                "password": ice.password,
                "iceLite": True,
            },
            "iceCandidates": [
                {
                    "foundation": c.foundation,
                    "priority": c.priority,
                    "address": c.ip,  # mediasoup >= 3.13 names it "address"
                    "ip": c.ip,
                    "protocol": c.protocol,
                    "port": c.port,
                    "type": c.type,
                }
                for c in self.gatherer.getLocalCandidates()
                if c.protocol == "udp"
            ],
            "dtlsParameters": {
                "role": "auto",
                "fingerprints": [{"algorithm": f.algorithm, "value": f.value} for f in dtls.fingerprints],
            },
            "sctpParameters": None,
        }

    async def connect(self, dtls_parameters: dict[str, Any]) -> None:
        """connectWebRtcTransport: the peer's DTLS role decides ours (the opposite)."""
        role = dtls_parameters.get("role", "auto")
        self.dtls._set_role("server" if role == "client" else "client")
        fingerprints = [
            RTCDtlsFingerprint(f["algorithm"], f["value"]) for f in dtls_parameters["fingerprints"]
        ]

        async def run() -> None:
            await self.ice.start(
                RTCIceParameters(usernameFragment="peer", password="unknown-to-a-lite-agent")
            )
            await self.dtls.start(RTCDtlsParameters(fingerprints=fingerprints, role="auto"))
            self.connected.set()

        self.tasks.append(asyncio.create_task(run()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.dtls.stop()
        with contextlib.suppress(Exception):
            await self.ice.stop()


@dataclass
class _Peer:
    socket: ServerConnection
    room_id: str
    peer_id: str
    transports: dict[str, SfuTransport] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 1000
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    senders: list[RTCRtpSender] = field(default_factory=list)
    receivers: list[RTCRtpReceiver] = field(default_factory=list)
    consuming_transport: SfuTransport | None = None


class TestSfu:
    """A one-room stand-in SFU for injected protocol faults (the module's docstring lists who uses
    it and why). ``async with TestSfu() as sfu: url = sfu.url(room, peer)``."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        *,
        ignore_methods: Iterable[str] = (),
        video: Path = FACE_VIDEO,
    ) -> None:
        self.ignore_methods = set(ignore_methods)
        self.video = video
        self.methods: list[str] = []
        self.received_frames = 0
        self.last_received: np.ndarray | None = None
        self.errors: list[str] = []
        self.joined = asyncio.Event()
        self.left = asyncio.Event()
        self.produced = asyncio.Event()
        self.accepting = True
        self._server: Server | None = None
        self._peers: list[_Peer] = []
        self._frames: list[np.ndarray] | None = None

    async def __aenter__(self) -> TestSfu:
        self._frames = await asyncio.to_thread(face_frames, self.video)
        self._server = await serve(self._serve, "127.0.0.1", 0, subprotocols=["protoo"])  # type: ignore[list-item]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    def url(self, room_id: str = "room-1", peer_id: str = "faceproof") -> str:
        return f"ws://127.0.0.1:{self.port}/?roomId={room_id}&peerId={peer_id}"

    async def drop(self) -> None:
        """Abort every peer's socket (no close handshake) and refuse new connections."""
        self.accepting = False
        for peer in list(self._peers):
            transport = peer.socket.transport
            if transport is not None:
                transport.abort()

    async def close(self) -> None:
        self.accepting = False
        for peer in list(self._peers):
            await self._forget(peer)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ protoo

    async def _serve(self, socket: ServerConnection) -> None:
        if not self.accepting or socket.request is None:
            await socket.close(code=1013)
            return
        query = parse_qs(urlparse(socket.request.path).query)
        peer = _Peer(socket, query.get("roomId", [""])[0], query.get("peerId", [""])[0])
        if not peer.room_id or not peer.peer_id:
            await socket.close(code=1008, reason="roomId and peerId required")
            return
        self._peers.append(peer)
        try:
            async for raw in socket:
                message = json.loads(raw)
                if message.get("request"):
                    self._spawn(peer, self._answer(peer, message))
                elif message.get("response"):
                    future = peer.pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
        except ConnectionClosed:
            pass
        finally:
            self.left.set()
            await self._forget(peer)

    async def _answer(self, peer: _Peer, message: dict[str, Any]) -> None:
        method = message["method"]
        self.methods.append(method)
        if method in self.ignore_methods:
            return
        try:
            data = await self._handle(peer, method, message.get("data") or {})
            response = {"response": True, "id": message["id"], "ok": True, "data": data}
        except (KeyError, ValueError, LookupError) as error:
            response = {
                "response": True,
                "id": message["id"],
                "ok": False,
                "errorCode": 500,
                "errorReason": str(error),
            }
        with contextlib.suppress(ConnectionClosed):
            await peer.socket.send(json.dumps(response))
        if method == "join" and response["ok"]:
            self._spawn(peer, self._offer_subject(peer))

    async def _handle(self, peer: _Peer, method: str, data: dict[str, Any]) -> dict[str, Any]:
        if method == "getRouterRtpCapabilities":
            return ROUTER_RTP_CAPABILITIES
        if method == "createWebRtcTransport":
            transport = await SfuTransport.create()
            peer.transports[transport.id] = transport
            if data.get("consuming"):
                peer.consuming_transport = transport
            return transport.describe()
        if method == "connectWebRtcTransport":
            await peer.transports[data["transportId"]].connect(data["dtlsParameters"])
            return {}
        if method == "join":
            if not isinstance(data.get("rtpCapabilities"), dict):
                raise ValueError("join needs rtpCapabilities")
            self.joined.set()
            return {"peers": [{"id": "subject", "displayName": "Subject", "device": {"flag": "test"}}]}
        if method == "produce":
            transport = peer.transports[data["transportId"]]
            if data.get("kind") != "video":
                raise ValueError("this room takes video only")
            receiver = RTCRtpReceiver("video", transport.dtls)
            receiver._track = RemoteStreamTrack(kind="video")  # as RTCPeerConnection does
            peer.receivers.append(receiver)
            self._spawn(peer, self._receive(transport, receiver, data["rtpParameters"]))
            self.produced.set()
            return {"id": secrets.token_hex(8)}
        if method in ("resumeConsumer", "pauseConsumer", "leaveRoom"):
            if method == "leaveRoom":
                self.left.set()
            return {}
        raise ValueError(f"unknown method {method}")

    async def _request(self, peer: _Peer, method: str, data: dict[str, Any]) -> dict[str, Any]:
        peer.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        peer.pending[peer.next_id] = future
        await peer.socket.send(
            json.dumps({"request": True, "id": peer.next_id, "method": method, "data": data})
        )
        return await asyncio.wait_for(future, 30)

    # ------------------------------------------------------------------ media

    async def _offer_subject(self, peer: _Peer) -> None:
        """After join: the subject's video producer becomes a consumer of the peer (newConsumer)."""
        transport = peer.consuming_transport
        if transport is None:
            return
        track = FaceVideoTrack(self._frames or [])  # the subject: ``video`` looped
        sender = RTCRtpSender(track, transport.dtls)
        peer.senders.append(sender)
        ssrc = sender._ssrc
        feedback = [
            RTCRtcpFeedback(type="nack"),
            RTCRtcpFeedback(type="nack", parameter="pli"),
            RTCRtcpFeedback(type="ccm", parameter="fir"),
            RTCRtcpFeedback(type="goog-remb"),
        ]
        rtp_parameters = {
            "mid": "0",
            "codecs": [
                {
                    "mimeType": "video/VP8",
                    "payloadType": VIDEO_PT,
                    "clockRate": _CLOCK,
                    "parameters": {},
                    "rtcpFeedback": [{"type": f.type, "parameter": f.parameter or ""} for f in feedback],
                }
            ],
            "headerExtensions": [],
            "encodings": [{"ssrc": ssrc}],
            "rtcp": {"cname": "subject", "reducedSize": True, "mux": True},
        }
        answer = await self._request(
            peer,
            "newConsumer",
            {
                "peerId": "subject",
                "producerId": secrets.token_hex(8),
                "id": secrets.token_hex(8),
                "kind": "video",
                "rtpParameters": rtp_parameters,
                "type": "simple",
                "appData": {"peerId": "subject"},
                "producerPaused": False,
            },
        )
        if not answer.get("ok"):
            return
        await transport.connected.wait()
        await sender.send(
            RTCRtpSendParameters(
                codecs=[
                    RTCRtpCodecParameters(
                        mimeType="video/VP8", clockRate=_CLOCK, payloadType=VIDEO_PT, rtcpFeedback=feedback
                    )
                ],
                muxId="0",
                rtcp=RTCRtcpParameters(cname="subject", mux=True, ssrc=ssrc),
            )
        )

    async def _receive(self, transport: SfuTransport, receiver: RTCRtpReceiver, rtp: dict[str, Any]) -> None:
        """The peer's produced video, decoded: count frames, keep the last one."""
        await transport.connected.wait()
        await receiver.receive(
            RTCRtpReceiveParameters(
                codecs=[
                    RTCRtpCodecParameters(
                        mimeType=c["mimeType"],
                        clockRate=c["clockRate"],
                        payloadType=c["payloadType"],
                        parameters=c.get("parameters", {}),
                    )
                    for c in rtp["codecs"]
                ],
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=h["id"], uri=h["uri"])
                    for h in rtp.get("headerExtensions", [])
                ],
                muxId=rtp.get("mid") or "",
                rtcp=RTCRtcpParameters(cname=(rtp.get("rtcp") or {}).get("cname"), mux=True),
                encodings=[
                    RTCRtpDecodingParameters(ssrc=e["ssrc"], payloadType=rtp["codecs"][0]["payloadType"])
                    for e in rtp.get("encodings", [])
                    if "ssrc" in e
                ],
            )
        )
        while True:
            try:
                frame = await receiver.track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                self.received_frames += 1
                self.last_received = frame.to_ndarray(format="rgb24")

    def _spawn(self, peer: _Peer, work: Any) -> None:
        task = asyncio.create_task(work)
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)
        task.add_done_callback(self._report)

    def _report(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))
            log.error("test SFU task failed", exc_info=task.exception())

    async def _forget(self, peer: _Peer) -> None:
        if peer not in self._peers:
            return
        self._peers.remove(peer)
        for task in list(peer.tasks):
            task.cancel()
        for future in peer.pending.values():
            future.cancel()
        for sender in peer.senders:
            with contextlib.suppress(Exception):
                await sender.stop()
        for receiver in peer.receivers:
            with contextlib.suppress(Exception):
                await receiver.stop()
        for transport in peer.transports.values():
            await transport.close()


@asynccontextmanager
async def redirecting_room(location: str) -> AsyncIterator[str]:
    """A WebSocket endpoint on 127.0.0.1 (allow-listed) answering every handshake with a 302."""

    def redirect(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(HTTPStatus.FOUND, "")
        response.headers["Location"] = location
        return response

    async with serve(lambda socket: socket.close(), "127.0.0.1", 0, process_request=redirect) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/?roomId=r&peerId=faceproof"
