"""Our peer in a mediasoup room (mediasoup-demo's protoo room protocol) through pymediasoup.

Join: ``getRouterRtpCapabilities`` -> load the device -> ``createWebRtcTransport`` for sending and
for receiving -> ``join`` -> ``produce`` the instruction track (the send transport's first
``connect`` sends ``connectWebRtcTransport``). The room then sends us a ``newConsumer`` REQUEST per
producer of the other peers; we create the consumer and answer ``ok``, hand the subject's video
track to ``on_track``, and ask ``resumeConsumer``. ``leave`` says ``leaveRoom`` and closes.

What a room may make us receive is bounded: the join advertises video codecs only (a compliant
room never offers audio); ``newConsumer`` is answered ``ok: false`` for anything but video, for a
video while another is live (the first stays the subject's camera until the room closes it), for
a consumer id already in use, and past :data:`MAX_CONSUMERS` consumers over the peer's life.

pymediasoup is untyped: its objects are ``Any`` here, and whatever it raises on the room's data is
translated into :class:`SignallingError` at this edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri
from pydantic import ValidationError
from pymediasoup import Device  # type: ignore[import-untyped]
from pymediasoup.errors import Error as MediaSoupError  # type: ignore[import-untyped]
from pymediasoup.handlers.aiortc_handler import AiortcHandler  # type: ignore[import-untyped]
from pymediasoup.models.transport import DtlsParameters  # type: ignore[import-untyped]
from pymediasoup.rtp_parameters import RtpCapabilities, RtpParameters  # type: ignore[import-untyped]

from infra.safe_fetch import FetchError, FetchPolicy, IPAddress, Resolver, check_host, resolve_host
from services.call_agent.room.errors import RoomError, RoomRefused, SignallingError
from services.call_agent.room.protoo import Data, ProtooClient

__all__ = ["DISPLAY_NAME", "MAX_CONSUMERS", "RoomConfig", "RoomPeer", "parse_ice_servers_json"]

log = logging.getLogger("faceproof.call_agent.room")

DISPLAY_NAME = "faceproof"
#: Consumers one peer accepts over its life (one live at a time): the subject's camera and a few
#: returns (each return restarts the challenge; the flow's deadline bounds them anyway).
MAX_CONSUMERS = 16
#: The ICE candidates and STUN/TURN servers (and URLs per server) of a room's answer looked at;
#: the rest are ignored. Each name is looked up (up to the request timeout) before the call goes
#: on: hundreds of slow names held a call slot for the session's whole lifetime.
MAX_ROOM_CANDIDATES = 16
MAX_ROOM_SERVERS = 4
#: What pymediasoup and pydantic raise on data they cannot use.
_MEDIA_ERRORS = (MediaSoupError, ValidationError, ValueError, TypeError, KeyError, LookupError)


@dataclass(frozen=True)
class RoomConfig:
    request_timeout_s: float = 10.0
    #: Which room URLs may be opened, and which ICE candidates and TURN/STUN servers a room's
    #: answer may name (infra/safe_fetch.py; FACEPROOF_FETCH_ALLOW_HOSTS). The default allows
    #: public addresses only.
    address_policy: FetchPolicy = field(default_factory=FetchPolicy)
    resolve: Resolver = resolve_host
    #: Only TURN relay candidates (the agent behind a strict firewall); needs TURN servers.
    relay_only: bool = False
    #: Used when the room's createWebRtcTransport answer brings no ``iceServers`` of its own.
    ice_servers: tuple[RTCIceServer, ...] = ()
    display_name: str = DISPLAY_NAME


def _urls(raw: object) -> list[str]:
    """An RTCIceServer's ``urls``: one string or a list of them (anything else is dropped)."""
    if isinstance(raw, str):
        return [raw]
    return [url for url in raw if isinstance(url, str)] if isinstance(raw, list) else []


def parse_ice_servers_json(entries: object) -> list[RTCIceServer] | None:
    """The ``iceServers`` a room may send with a transport (RTCIceServer dicts); None if absent."""
    if not isinstance(entries, list):
        return None
    servers: list[RTCIceServer] = []
    for entry in entries:
        urls = _urls(entry.get("urls")) if isinstance(entry, dict) else []
        if not urls:
            continue
        username = entry.get("username")
        credential = entry.get("credential")
        servers.append(
            RTCIceServer(
                urls=urls,
                username=username if isinstance(username, str) else None,
                credential=credential if isinstance(credential, str) else None,
            )
        )
    return servers


def _candidates(raw: object) -> list[dict[str, Any]]:
    """mediasoup >= 3.13 names a candidate's IP ``address`` (``ip`` before); pymediasoup reads ``ip``."""
    if not isinstance(raw, list):
        raise SignallingError("createWebRtcTransport: no iceCandidates")
    out: list[dict[str, Any]] = []
    for candidate in raw:
        if isinstance(candidate, dict):
            entry = dict(candidate)
            if "ip" not in entry and "address" in entry:
                entry["ip"] = entry["address"]
            out.append(entry)
    return out


def _receivable(capabilities: dict[str, Any]) -> dict[str, Any]:
    """The RTP capabilities we send at ``join`` (what the room may make us consume): no audio codec
    or header extension. We consume the subject's camera only; an audio consumer's aiortc track
    would queue decoded frames nobody reads. A compliant room (mediasoup's ``canConsume``) then
    never offers audio; ``newConsumer`` still refuses it from one that does."""
    receivable = dict(capabilities)
    for key in ("codecs", "headerExtensions"):
        entries = capabilities.get(key)
        if isinstance(entries, list):
            receivable[key] = [e for e in entries if not (isinstance(e, dict) and e.get("kind") == "audio")]
    return receivable


def ice_url_host(url: str) -> str | None:
    """The host of a ``stun:``/``stuns:``/``turn:``/``turns:`` URL (RFC 7064/7065), else None."""
    scheme, colon, rest = url.partition(":")
    if not colon or scheme.lower() not in {"stun", "stuns", "turn", "turns"}:
        return None
    rest = rest.split("?", 1)[0]
    if rest.startswith("["):
        host, bracket, _port = rest[1:].partition("]")
        return host if bracket else None
    host = rest.split(":", 1)[0] if rest.count(":") <= 1 else ""
    return host or None


def pin_ice_url(url: str, address: IPAddress) -> str:
    """``url`` (a ``stun:``/``turn:`` URL, see :func:`ice_url_host`) with its host replaced by
    ``address``: the scheme in lower case, port and ``?transport=`` kept."""
    scheme, _, rest = url.partition(":")
    rest, question, query = rest.partition("?")
    port = rest.partition("]")[2].removeprefix(":") if rest.startswith("[") else rest.partition(":")[2]
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{scheme.lower()}:{host}{':' + port if port else ''}{question}{query}"


class _RoomHandler(AiortcHandler):  # type: ignore[misc]
    """pymediasoup's aiortc handler, honouring ``iceTransportPolicy`` (it passes only ``iceServers``)."""

    def run(self, **options: Any) -> None:
        super().run(**options)
        if options.get("iceTransportPolicy") == "relay":
            self._pc = RTCPeerConnection(
                RTCConfiguration(
                    iceServers=options.get("iceServers"), iceTransportPolicy=RTCIceTransportPolicy.RELAY
                )
            )
            pc = self._pc

            @pc.on("iceconnectionstatechange")
            def _state() -> None:
                state = {"checking": "connecting", "completed": "connected"}.get(
                    pc.iceConnectionState, pc.iceConnectionState
                )
                if state in ("connecting", "connected", "failed", "disconnected", "closed"):
                    self.emit("@connectionstatechange", state)


class RoomPeer:
    """One peer of ours in one room, over an already connected :class:`ProtooClient`.

    ``on_track`` gets the subject's video track (each video consumer's); ``on_failure`` gets a
    :class:`RoomError` when a media transport fails after joining.
    """

    def __init__(
        self,
        protoo: ProtooClient,
        config: RoomConfig,
        *,
        on_track: Callable[[MediaStreamTrack], None],
        on_failure: Callable[[RoomError], None],
        on_video_closed: Callable[[], None] = lambda: None,
    ) -> None:
        self._protoo = protoo
        self._config = config
        self._on_track = on_track
        self._on_failure = on_failure
        self._on_video_closed = on_video_closed
        self._device: Any = None
        self._send: Any = None
        self._recv: Any = None
        self._producer: Any = None
        self._consumers: dict[str, Any] = {}
        #: Consumer ids being created (newConsumer not answered yet): True once the room closed one.
        self._creating: dict[str, bool] = {}
        self._consumed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._joined = False
        self._produce_error: RoomError | None = None
        protoo.on_request = self.handle_request
        protoo.on_notification = self._on_notification

    @property
    def producer_id(self) -> str | None:
        return None if self._producer is None else str(self._producer.id)

    async def join(self, outbound: MediaStreamTrack) -> Data:
        """Join the room and produce ``outbound``. Returns join's answer (``{"peers": [...]}``)."""
        protoo = self._protoo
        capabilities = await protoo.request("getRouterRtpCapabilities")
        try:
            self._device = Device(handlerFactory=_RoomHandler.createFactory())
            await self._device.load(RtpCapabilities(**capabilities))
        except _MEDIA_ERRORS as error:
            raise SignallingError(f"unusable router RTP capabilities ({type(error).__name__})") from None
        if not self._device.canProduce("video"):
            raise SignallingError("the room's router cannot receive video we can send")
        self._send = await self._transport("send")
        self._recv = await self._transport("recv")
        answer = await protoo.request(
            "join",
            {
                "displayName": self._config.display_name,
                "device": {"flag": "faceproof", "name": "faceproof", "version": "1"},
                "rtpCapabilities": _receivable(self._device.rtpCapabilities.model_dump(exclude_none=True)),
            },
        )
        self._joined = True
        try:
            self._producer = await self._send.produce(
                track=outbound, stopTracks=False, appData={"source": "faceproof-instructions"}
            )
        except _MEDIA_ERRORS as error:
            if self._produce_error is not None:
                raise self._produce_error from None
            raise SignallingError(f"cannot produce the instruction video ({type(error).__name__})") from None
        return answer

    async def leave(self) -> None:
        """Say ``leaveRoom`` (briefly; a room that does not know it is fine) and close the transports."""
        if self._joined and self._protoo.connected:
            try:
                await self._protoo.request("leaveRoom", timeout_s=min(2.0, self._config.request_timeout_s))
            except RoomError as error:
                log.info("leaveRoom not acknowledged (%s)", type(error).__name__)
        self._joined = False
        for task in list(self._tasks):
            task.cancel()
        for transport in (self._send, self._recv):
            if transport is not None:
                with contextlib.suppress(*_MEDIA_ERRORS):
                    await transport.close()

    # ------------------------------------------------------------------ the room's requests

    async def handle_request(self, method: str, data: Data) -> Data:
        if method == "newConsumer":
            await self._new_consumer(data)
            return {}
        raise SignallingError(f"not supported: {method[:64]}")

    async def _new_consumer(self, data: Data) -> None:
        """Consume the subject's camera: one video at a time (SignallingError: the room gets
        ``ok: false`` and the call goes on)."""
        if self._recv is None:
            raise SignallingError("newConsumer before the receive transport exists")
        consumer_id = data.get("id")
        producer_id = data.get("producerId")
        kind = data.get("kind")
        if (
            not isinstance(consumer_id, str)
            or not isinstance(producer_id, str)
            or kind not in ("audio", "video")
            or not 0 < len(consumer_id) <= 256
        ):
            raise SignallingError("newConsumer: missing id, producerId or kind")
        if kind != "video":
            raise SignallingError(f"newConsumer: {kind} is not consumed (video only)")
        if consumer_id in self._consumers or consumer_id in self._creating:
            raise SignallingError("newConsumer: the consumer id is already in use")
        if self._consumers or self._creating:
            raise SignallingError(
                "newConsumer: a video is already consumed (the subject's camera; one at a time)"
            )
        if self._consumed >= MAX_CONSUMERS:
            raise SignallingError(f"newConsumer: {MAX_CONSUMERS} consumers already accepted in this call")
        self._consumed += 1
        self._creating[consumer_id] = False
        try:
            consumer = await self._recv.consume(
                id=consumer_id,
                producerId=producer_id,
                kind=kind,
                rtpParameters=RtpParameters(**data.get("rtpParameters", {})),
                appData=data.get("appData") if isinstance(data.get("appData"), dict) else {},
            )
        except _MEDIA_ERRORS as error:
            raise SignallingError(f"newConsumer: cannot consume ({type(error).__name__})") from None
        finally:
            closed_meanwhile = self._creating.pop(consumer_id, False)
        if closed_meanwhile:  # the room closed it before we answered: no consumer to keep
            self._spawn(self._close_consumer(consumer))
            raise SignallingError("newConsumer: the room closed the consumer while it was created")
        self._consumers[consumer_id] = consumer
        if consumer.track is not None:
            self._on_track(consumer.track)
        self._spawn(self._resume(consumer_id))

    async def _resume(self, consumer_id: str) -> None:
        await asyncio.sleep(0.05)  # after our newConsumer answer went out
        try:
            await self._protoo.request("resumeConsumer", {"consumerId": consumer_id})
        except RoomError as error:
            log.info("resumeConsumer not acknowledged (%s)", type(error).__name__)

    def _on_notification(self, method: str, data: Data) -> None:
        if method == "consumerClosed":
            consumer_id = data.get("consumerId")
            if isinstance(consumer_id, str) and consumer_id in self._creating:
                self._creating[consumer_id] = True
            consumer = self._consumers.pop(consumer_id, None) if isinstance(consumer_id, str) else None
            if consumer is not None:  # its producer left (the subject hung up)
                if getattr(consumer, "kind", None) == "video":
                    self._on_video_closed()
                self._spawn(self._close_consumer(consumer))
        log.debug("room notification %s", method[:64])

    async def _close_consumer(self, consumer: Any) -> None:
        try:
            await consumer.close()  # frees its transceiver (a returning subject gets a new one)
        except Exception as error:  # pymediasoup raises bare Exception (stopReceiving)
            log.info("closing a consumer failed (%s)", type(error).__name__)

    # ------------------------------------------------------------------ transports

    async def _transport(self, direction: Literal["send", "recv"]) -> Any:
        info = await self._protoo.request(
            "createWebRtcTransport",
            {"forceTcp": False, "producing": direction == "send", "consuming": direction == "recv"},
        )
        options = await self._transport_options(info)
        try:
            if direction == "send":
                transport = self._device.createSendTransport(**options)
            else:
                transport = self._device.createRecvTransport(**options)
        except _MEDIA_ERRORS as error:
            raise SignallingError(
                f"createWebRtcTransport: unusable answer ({type(error).__name__})"
            ) from None
        transport_id = str(info.get("id"))

        async def on_connect(dtls_parameters: DtlsParameters) -> None:
            await self._connect_transport(transport_id, dtls_parameters)

        async def on_produce(
            kind: str, rtp_parameters: RtpParameters, app_data: dict[str, Any]
        ) -> str | None:
            return await self._produce(transport_id, kind, rtp_parameters, app_data)

        def on_state(state: str) -> None:
            if state == "failed" and self._joined:
                self._on_failure(SignallingError(f"the {direction} media transport failed"))

        transport.on("connect", on_connect)
        transport.on("connectionstatechange", on_state)
        if direction == "send":
            transport.on("produce", on_produce)
        return transport

    async def _transport_options(self, info: dict[str, Any]) -> dict[str, Any]:
        """pymediasoup's transport options from the room's createWebRtcTransport answer: only the
        ICE candidates and the room's own STUN/TURN servers the address policy allows (a room is
        any server a caller names: its answer must not send the agent's packets to internal
        addresses, as its URL may not)."""
        servers = parse_ice_servers_json(info.get("iceServers"))
        candidates = await self._allowed_candidates(_candidates(info.get("iceCandidates")))
        ice_servers = (
            await self._allowed_servers(servers) if servers is not None else list(self._config.ice_servers)
        )
        if not ice_servers and not any(str(c.get("protocol", "udp")).lower() == "udp" for c in candidates):
            # aioice pairs UDP candidates only (no ICE-TCP, RFC 6544): ICE would just time out
            raise SignallingError(
                "createWebRtcTransport: the room offered TCP candidates only (forceTcp); the agent's "
                "ICE needs UDP or a TURN relay (FACEPROOF_ICE_SERVERS)"
            )
        return {
            "id": info.get("id"),
            "iceParameters": info.get("iceParameters"),
            "iceCandidates": candidates,
            "dtlsParameters": info.get("dtlsParameters"),
            "sctpParameters": info.get("sctpParameters"),
            "iceServers": ice_servers,
            "iceTransportPolicy": "relay" if self._config.relay_only else "all",
        }

    async def _refusal(self, host: str, resolve: Resolver | None = None) -> str | None:
        """Why the address policy refuses ``host`` (None: allowed)."""
        try:
            async with asyncio.timeout(self._config.request_timeout_s):  # a name's lookup included
                await check_host(host, self._config.address_policy, resolve or self._config.resolve)
        except TimeoutError:
            return f"{host} was not resolved within {self._config.request_timeout_s:g} s"
        except FetchError as error:
            return str(error)
        return None

    async def _allowed_candidates(self, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        allowed: list[dict[str, Any]] = []
        refusals: list[str] = []
        for candidate in candidates[:MAX_ROOM_CANDIDATES]:
            refusal = await self._refusal(str(candidate.get("ip") or ""))
            if refusal is None:
                allowed.append(candidate)
            else:
                refusals.append(refusal)
        if refusals and not allowed:
            raise RoomRefused(f"createWebRtcTransport: every ICE candidate was refused ({refusals[0]})")
        if refusals:
            log.info("createWebRtcTransport: %d ICE candidates refused (%s)", len(refusals), refusals[0])
        return allowed

    async def _allowed_servers(self, servers: list[RTCIceServer]) -> list[RTCIceServer]:
        allowed: list[RTCIceServer] = []
        for server in servers[:MAX_ROOM_SERVERS]:
            urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)[:MAX_ROOM_SERVERS]
            kept = []
            for url in urls:
                pinned, refusal = await self._pinned_server(url)
                if pinned is not None:
                    kept.append(pinned)
                else:
                    log.info("createWebRtcTransport: an ICE server the room named was refused (%s)", refusal)
            if kept:
                allowed.append(
                    RTCIceServer(urls=kept, username=server.username, credential=server.credential)
                )
        return allowed

    async def _pinned_server(self, url: str) -> tuple[str | None, str]:
        """A STUN/TURN URL the room named, its host replaced by the address the policy checked
        (aioice would resolve a name again when it uses the server: a second answer, past the
        check); else None and why. ``stuns:``/``turns:`` by name are dropped (TLS needs the name,
        and the name would be resolved again); aiortc takes no IPv6 address in these URLs."""
        host = ice_url_host(url)
        if host is None:
            return None, "not a STUN or TURN URL"
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is None and url.partition(":")[0].lower() in ("stuns", "turns"):
            return None, f"{host}: a TLS STUN/TURN server by name (its address cannot be pinned)"
        resolved: list[IPAddress] = []

        async def resolve_once(name: str, port: int) -> list[IPAddress]:
            resolved[:] = await self._config.resolve(name, port)
            return resolved

        refusal = await self._refusal(host, resolve_once)
        if refusal is not None:
            return None, refusal
        address = literal or next((a for a in resolved if a.version == 4), None)
        if address is None or address.version != 4:
            return None, f"{host}: IPv6 only (aiortc takes no IPv6 address in a STUN/TURN URL)"
        pinned = pin_ice_url(url, address)
        try:
            parse_stun_turn_uri(pinned)
        except ValueError:
            return None, f"{host}: a malformed STUN/TURN URL"
        return pinned, ""

    async def _connect_transport(self, transport_id: str, dtls_parameters: DtlsParameters) -> None:
        try:
            await self._protoo.request(
                "connectWebRtcTransport",
                {
                    "transportId": transport_id,
                    "dtlsParameters": dtls_parameters.model_dump(exclude_none=True),
                },
            )
        except RoomError as error:
            self._on_failure(error)

    async def _produce(
        self, transport_id: str, kind: str, rtp_parameters: RtpParameters, app_data: dict[str, Any]
    ) -> str | None:
        # pymediasoup swallows a listener's exception: keep ours to raise it from join().
        try:
            answer = await self._protoo.request(
                "produce",
                {
                    "transportId": transport_id,
                    "kind": kind,
                    "rtpParameters": rtp_parameters.model_dump(exclude_none=True),
                    "appData": app_data,
                },
            )
        except RoomError as error:
            self._produce_error = error
            return None
        producer_id = answer.get("id")
        if not isinstance(producer_id, str) or not producer_id:
            self._produce_error = SignallingError("produce: the room gave no producer id")
            return None
        return producer_id

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
