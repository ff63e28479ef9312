"""What newer mediasoup (3.13 and later) sends a protoo client, as the agent's RoomPeer takes it.

The room tests run mediasoup 3.8.4 (the newest that builds offline, docs/rooms.md). The shapes
here are copied from the npm tarballs of mediasoup 3.14.16 and 3.32.2 (``npm pack``): their
``WebRtcTransport.js`` gives each ICE candidate both ``ip`` and ``address`` and leaves ``tcpType``
out when the worker gives none, and their router offers header extensions 3.8.4 has not
(abs-capture-time, playout-delay, AV1's dependency descriptor, mediasoup's packet-id) and drops
two it had (toffset, framemarking).
"""

from __future__ import annotations

from typing import Any

import pytest
from pymediasoup import Device  # type: ignore[import-untyped]
from pymediasoup.rtp_parameters import RtpCapabilities  # type: ignore[import-untyped]

from infra.safe_fetch import FetchPolicy
from services.call_agent.room.errors import SignallingError
from services.call_agent.room.mediasoup import RoomConfig, RoomPeer, _candidates, _RoomHandler
from services.call_agent.room.protoo import ProtooClient

#: createWebRtcTransport's answer from a mediasoup 3.14 room (mediasoup-demo passes the
#: transport's iceParameters, iceCandidates, dtlsParameters and sctpParameters through).
ANSWER_3_14: dict[str, Any] = {
    "id": "5f0b1d4e-5d8e-4a59-9a3b-1f2e3d4c5b6a",
    "iceParameters": {
        "usernameFragment": "3vd1x9ut6d8kvsbd",
        "password": "p2m3m9n9j1q4vhs1",
        "iceLite": True,
    },
    "iceCandidates": [
        {
            "foundation": "udpcandidate",
            "priority": 1076302079,
            "ip": "203.0.113.7",
            "address": "203.0.113.7",
            "protocol": "udp",
            "port": 40123,
            "type": "host",
        },
        {
            "foundation": "tcpcandidate",
            "priority": 1076276479,
            "ip": "203.0.113.7",
            "address": "203.0.113.7",
            "protocol": "tcp",
            "port": 40124,
            "type": "host",
            "tcpType": "passive",
        },
    ],
    "dtlsParameters": {
        "role": "auto",
        "fingerprints": [{"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}],
    },
}

#: A 3.32 router's capabilities with mediasoup-demo's VP8 (only the video part matters here).
ROUTER_3_32: dict[str, Any] = {
    "codecs": [
        {
            "kind": "video",
            "mimeType": "video/VP8",
            "preferredPayloadType": 101,
            "clockRate": 90000,
            "parameters": {"x-google-start-bitrate": 1000},
            "rtcpFeedback": [
                {"type": "nack"},
                {"type": "nack", "parameter": "pli"},
                {"type": "ccm", "parameter": "fir"},
                {"type": "goog-remb"},
                {"type": "transport-cc"},
            ],
        },
        {
            "kind": "video",
            "mimeType": "video/rtx",
            "preferredPayloadType": 102,
            "clockRate": 90000,
            "parameters": {"apt": 101},
            "rtcpFeedback": [],
        },
    ],
    "headerExtensions": [
        {
            "kind": "video",
            "uri": uri,
            "preferredId": number,
            "preferredEncrypt": False,
            "direction": direction,
        }
        for number, (uri, direction) in enumerate(
            [
                ("urn:ietf:params:rtp-hdrext:sdes:mid", "sendrecv"),
                ("http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "sendrecv"),
                ("http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "sendrecv"),
                ("urn:3gpp:video-orientation", "sendrecv"),
                (
                    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension",
                    "recvonly",
                ),
                ("http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time", "sendrecv"),
                ("http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", "sendrecv"),
                ("urn:mediasoup:params:rtp-hdrext:packet-id", "sendrecv"),
            ],
            start=1,
        )
    ],
}


def test_candidates_keep_both_fields_and_take_address_when_ip_is_gone() -> None:
    candidates = _candidates(ANSWER_3_14["iceCandidates"])
    assert [(c["ip"], c["address"]) for c in candidates] == [("203.0.113.7", "203.0.113.7")] * 2
    # a room that sends only `address` (what mediasoup-client reads since 3.13's deprecation)
    only_address = [{k: v for k, v in c.items() if k != "ip"} for c in ANSWER_3_14["iceCandidates"]]
    assert [c["ip"] for c in _candidates(only_address)] == ["203.0.113.7", "203.0.113.7"]
    with pytest.raises(SignallingError, match="no iceCandidates"):
        _candidates(None)


async def test_a_newer_rooms_answers_make_a_device_and_its_transports() -> None:
    peer = RoomPeer(
        ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0),
        RoomConfig(address_policy=FetchPolicy.create("203.0.113.7")),  # a documentation address
        on_track=lambda track: None,
        on_failure=lambda error: None,
    )
    device = Device(handlerFactory=_RoomHandler.createFactory())
    await device.load(RtpCapabilities(**ROUTER_3_32))
    assert device.canProduce("video")
    # the header extensions the agent offers in join: the newer ones its aiortc cannot use are left out
    offered = {extension.uri for extension in device.rtpCapabilities.headerExtensions}
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in offered
    assert "urn:mediasoup:params:rtp-hdrext:packet-id" not in offered
    for answer in (
        ANSWER_3_14,
        {
            **ANSWER_3_14,
            "iceCandidates": [
                {k: v for k, v in c.items() if k != "ip"} for c in ANSWER_3_14["iceCandidates"]
            ],
        },
    ):
        transport = device.createRecvTransport(**(await peer._transport_options(answer)))
        assert transport.id == ANSWER_3_14["id"]
        await transport.close()
