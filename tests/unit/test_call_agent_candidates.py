"""A browser's offer names the addresses the call agent's ICE sends STUN checks to: the ones the
address policy refuses are taken out (services/call_agent/candidates.py)."""

from __future__ import annotations

from infra.safe_fetch import FetchPolicy
from services.call_agent.candidates import filter_candidates

PUBLIC = "a=candidate:1 1 udp 1686052607 8.8.4.4 50000 typ srflx raddr 10.0.0.5 rport 50000\r\n"
METADATA = "a=candidate:2 1 udp 2130706431 169.254.169.254 80 typ host\r\n"
PRIVATE = "a=candidate:3 1 udp 2130706431 10.0.0.5 50000 typ host\r\n"
LOOPBACK = "a=candidate:4 1 udp 2130706431 127.0.0.1 6379 typ host\r\n"
MDNS = "a=candidate:5 1 udp 2130706431 1f4712db-ea17-4bcf-a596-105139dfd8bf.local 50000 typ host\r\n"
MAPPED = "a=candidate:6 1 udp 2130706431 ::ffff:10.0.0.5 50000 typ host\r\n"
END = "a=end-of-candidates\r\n"


def offer(*candidates: str) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
        + "".join(candidates)
        + END
    )


def test_refused_candidates_and_the_end_of_candidates_are_taken_out() -> None:
    filtered = filter_candidates(offer(PUBLIC, METADATA, PRIVATE, LOOPBACK, MDNS, MAPPED), FetchPolicy())
    assert filtered.refused == 5
    assert filtered.sdp == offer(PUBLIC).replace(END, "")


def test_an_offer_of_allowed_candidates_is_left_as_it_is() -> None:
    sdp = offer(PUBLIC)
    filtered = filter_candidates(sdp, FetchPolicy())
    assert (filtered.sdp, filtered.refused) == (sdp, 0)  # its end-of-candidates kept


def test_the_operators_allow_list_keeps_private_candidates_but_never_names() -> None:
    hosts, networks = FetchPolicy.parse_allow_list("10.0.0.0/8")
    policy = FetchPolicy(allow_hosts=hosts, allow_networks=networks)
    filtered = filter_candidates(offer(PRIVATE, MDNS), policy)
    assert filtered.refused == 1
    assert PRIVATE in filtered.sdp and MDNS not in filtered.sdp
