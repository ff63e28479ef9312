"""A browser's ICE candidates through the address policy.

aioice sends STUN connectivity checks to every candidate an offer names, so an offer naming
169.254.169.254, 10.x or a loopback port would have the call agent send packets there. The
candidates the safe fetcher's policy refuses (``FACEPROOF_FETCH_ALLOW_HOSTS`` allows private
ones) are taken out of the offer, and so are names (mDNS ``.local`` names resolve to LAN
addresses that cannot be checked first). A browser whose candidates were all taken out still
connects: its own checks reach the agent, which learns the address they came from (a
peer-reflexive candidate, RFC 8445 section 7.3.1.3) and answers there. For that the offer's
``a=end-of-candidates`` goes too when a candidate was taken out: aioice gives up at once on a
finished candidate list with no candidate left, before the browser's first check arrives (the
agent's connect deadline still bounds the wait)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from infra.safe_fetch import FetchPolicy

__all__ = ["FilteredOffer", "filter_candidates"]

log = logging.getLogger("faceproof.call_agent")

_CANDIDATE = "a=candidate:"
_END = "a=end-of-candidates"


@dataclass(frozen=True)
class FilteredOffer:
    sdp: str
    refused: int


def filter_candidates(sdp: str, policy: FetchPolicy) -> FilteredOffer:
    """``sdp`` without the ICE candidates ``policy`` refuses (and without its end-of-candidates
    when one was refused). Lines are kept byte for byte otherwise."""
    kept: list[str] = []
    refused = 0
    for line in sdp.splitlines(keepends=True):
        if line.startswith(_CANDIDATE) and _refused(line, policy):
            refused += 1
        else:
            kept.append(line)
    if not refused:
        return FilteredOffer(sdp, 0)
    kept = [line for line in kept if line.rstrip("\r\n") != _END]
    log.info("%d ICE candidates of the offer refused by the address policy", refused)
    return FilteredOffer("".join(kept), refused)


def _refused(line: str, policy: FetchPolicy) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    fields = line[len(_CANDIDATE) :].split()
    if len(fields) < 6:
        return False  # not a candidate aioice can use: aiortc's parser deals with it
    try:
        address = ipaddress.ip_address(fields[4])
    except ValueError:
        return True  # a name (mDNS .local): resolved by aioice to an address nobody checked
    return policy.refusal(address) is not None
