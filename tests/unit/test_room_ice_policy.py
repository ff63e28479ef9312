"""A room's createWebRtcTransport answer names addresses the agent will send packets to: its ICE
candidates (STUN checks, then media) and, if it brings any, STUN/TURN servers (TURN over TCP opens
a connection). A room is any server a caller names, so these go through the same address policy
as its URL (infra/safe_fetch.py): the ones it refuses are dropped, and a room that leaves none is
refused (ROOM_REFUSED)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from aiortc import RTCIceServer
from aiortc.rtcicetransport import connection_kwargs

from infra.safe_fetch import FetchFailed, FetchPolicy, IPAddress
from services.call_agent.room.errors import RoomRefused
from services.call_agent.room.mediasoup import (
    MAX_ROOM_CANDIDATES,
    MAX_ROOM_SERVERS,
    RoomConfig,
    RoomPeer,
    ice_url_host,
    pin_ice_url,
)
from services.call_agent.room.protoo import ProtooClient

NAMES = {"stun.example.org": "198.18.0.1", "turn.public.example": "8.8.4.4", "turn.internal": "10.1.2.3"}


async def resolve(host: str, port: int) -> list[IPAddress]:
    if host not in NAMES:
        raise FetchFailed(f"cannot resolve {host!r}")
    return [ipaddress.ip_address(NAMES[host])]


def peer(policy: FetchPolicy | None = None) -> RoomPeer:
    return RoomPeer(
        ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0),
        RoomConfig(address_policy=policy or FetchPolicy(), resolve=resolve),
        on_track=lambda track: None,
        on_failure=lambda error: None,
    )


def answer(*ips: str, servers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    candidates = [
        {"foundation": "udp", "priority": 1, "ip": ip, "protocol": "udp", "port": 40000 + n, "type": "host"}
        for n, ip in enumerate(ips)
    ]
    body: dict[str, Any] = {"id": "t", "iceParameters": {}, "iceCandidates": candidates, "dtlsParameters": {}}
    if servers is not None:
        body["iceServers"] = servers
    return body


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("stun:stun.example.org", "stun.example.org"),
        ("stun:stun.example.org:19302", "stun.example.org"),
        ("turn:10.1.2.3:3478?transport=tcp", "10.1.2.3"),
        ("turns:[fd00::1]:5349", "fd00::1"),
        ("TURN:127.0.0.1", "127.0.0.1"),
        ("http://127.0.0.1/", None),
        ("turn:", None),
        ("turn:[::1", None),
        ("stun:fd00::1:3478", None),  # an IPv6 address must be bracketed
    ],
)
def test_the_host_of_a_stun_or_turn_url(url: str, host: str | None) -> None:
    assert ice_url_host(url) == host


async def test_candidates_at_internal_addresses_are_dropped() -> None:
    options = await peer()._transport_options(
        answer("8.8.8.8", "127.0.0.1", "169.254.169.254", "10.0.0.7", "")
    )
    assert [c["ip"] for c in options["iceCandidates"]] == ["8.8.8.8"]


async def test_a_room_whose_candidates_are_all_refused_is_refused_saying_why() -> None:
    with pytest.raises(
        RoomRefused, match=r"every ICE candidate was refused \(10\.0\.0\.7 resolves to a private"
    ):
        await peer()._transport_options(answer("10.0.0.7", "169.254.169.254"))


async def test_allow_listed_addresses_pass_as_for_the_room_url() -> None:
    options = await peer(FetchPolicy.create("10.0.0.0/8"))._transport_options(answer("10.0.0.7"))
    assert [c["ip"] for c in options["iceCandidates"]] == ["10.0.0.7"]


async def test_the_rooms_own_stun_and_turn_servers_at_internal_addresses_are_dropped() -> None:
    servers = [
        {
            "urls": ["turn:127.0.0.1:6379?transport=tcp", "turn:turn.public.example:3478"],
            "username": "u",
            "credential": "c",
        },
        {"urls": "stun:stun.example.org"},  # resolves to a benchmarking (reserved) address
        {"urls": "turn:turn.internal?transport=tcp"},
        {"urls": "stun:unknown.invalid"},
        {"urls": "https://turn.public.example/"},
        {"urls": [1, None, {"u": "x"}]},  # not strings: dropped, not a crash
        {"urls": 5},
    ]
    options = await peer()._transport_options(answer("8.8.8.8", servers=servers))
    kept: list[RTCIceServer] = options["iceServers"]
    assert [(s.urls, s.username, s.credential) for s in kept] == [
        (["turn:8.8.4.4:3478"], "u", "c")  # the checked address, not the name (see below)
    ]


async def test_a_room_naming_hundreds_of_candidates_and_servers_gets_a_bounded_number_looked_up() -> None:
    """The attack: hundreds of candidate and server names whose lookups answer just before the
    request timeout: the agent looked up every one, holding a call slot for the whole session."""
    looked_up: list[str] = []

    async def counting(host: str, port: int) -> list[IPAddress]:
        looked_up.append(host)
        return [ipaddress.ip_address("8.8.8.8")]

    room = RoomPeer(
        ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0),
        RoomConfig(resolve=counting),
        on_track=lambda track: None,
        on_failure=lambda error: None,
    )
    body = answer(*(f"host-{n}.example" for n in range(300)))
    body["iceServers"] = [{"urls": [f"stun:stun-{n}-{m}.example" for m in range(50)]} for n in range(50)]
    options = await room._transport_options(body)
    assert len(options["iceCandidates"]) == MAX_ROOM_CANDIDATES
    assert len(looked_up) == MAX_ROOM_CANDIDATES + MAX_ROOM_SERVERS * MAX_ROOM_SERVERS


async def test_the_operators_own_ice_servers_are_not_filtered() -> None:
    mine = (RTCIceServer(urls="turn:10.9.9.9:3478", username="me", credential="secret"),)
    room = RoomPeer(
        ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0),
        RoomConfig(ice_servers=mine, resolve=resolve),
        on_track=lambda track: None,
        on_failure=lambda error: None,
    )
    options = await room._transport_options(answer("8.8.8.8"))
    assert options["iceServers"] == list(mine)


class Rebinding:
    """A room's DNS: the first answer passes the check, every later one names an internal address
    (what aioice would get when it resolves the TURN server's name again to use it)."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        first = len(self.lookups) == 1
        return [ipaddress.ip_address("8.8.4.4" if first else "127.0.0.1")]


async def test_a_named_stun_or_turn_server_is_pinned_to_the_address_that_was_checked() -> None:
    """DNS rebinding past the check: aioice resolves the URL's host itself when it uses the
    server, so a name kept in the URL could then answer 127.0.0.1. The URL carries the checked
    address, resolved once."""
    dns = Rebinding()
    room = RoomPeer(
        ProtooClient(policy=FetchPolicy(), request_timeout_s=1.0),
        RoomConfig(resolve=dns),
        on_track=lambda track: None,
        on_failure=lambda error: None,
    )
    servers = [{"urls": "turn:rebind.example:3478?transport=tcp", "username": "u", "credential": "c"}]
    options = await room._transport_options(answer("8.8.8.8", servers=servers))
    kept: list[RTCIceServer] = options["iceServers"]
    assert [s.urls for s in kept] == [["turn:8.8.4.4:3478?transport=tcp"]]
    assert dns.lookups == ["rebind.example"]
    kwargs = connection_kwargs(kept)  # what aiortc hands aioice: an address, no name to resolve
    assert kwargs["turn_server"] == ("8.8.4.4", 3478) and kwargs["turn_transport"] == "tcp"


async def test_named_tls_servers_of_the_room_are_dropped_and_literal_ones_pinned_as_they_are() -> None:
    servers = [
        {"urls": ["turns:turn.public.example:5349", "stuns:stun.example.org"]},  # TLS needs the name
        {"urls": ["turns:8.8.4.4:443?transport=tcp", "STUN:8.8.8.8"]},
        {"urls": ["turn:[2001:4860:4860::8888]:3478"]},  # aiortc parses no IPv6 address here
    ]
    options = await peer()._transport_options(answer("8.8.8.8", servers=servers))
    assert [s.urls for s in options["iceServers"]] == [["turns:8.8.4.4:443?transport=tcp", "stun:8.8.8.8"]]


@pytest.mark.parametrize(
    ("url", "pinned"),
    [
        ("stun:stun.example.org", "stun:8.8.4.4"),
        ("TURN:turn.example:3478?transport=udp", "turn:8.8.4.4:3478?transport=udp"),
        ("turn:[fd00::1]:3478", "turn:8.8.4.4:3478"),
    ],
)
def test_pinning_keeps_the_port_and_transport(url: str, pinned: str) -> None:
    assert pin_ice_url(url, ipaddress.ip_address("8.8.4.4")) == pinned
