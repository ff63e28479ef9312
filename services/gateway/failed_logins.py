"""Failed authentications per client address, kept in the gateway process (docs/security.md).

Checking an API key (``fp_...``) or a session's client token costs a database query, and the
rate limits are charged only to a caller who authenticated: a flood of made-up keys from one
address took a connection of the pool each, until every client got 503 DATABASE_UNAVAILABLE.
Each address has a token bucket of failures (``FACEPROOF_FAILED_LOGINS_PER_SECOND``, burst
``FACEPROOF_FAILED_LOGINS_BURST``); while it is empty, every request from that address that needs a
key or a client token is refused 429 ``AUTHENTICATION_THROTTLED`` before any lookup. In memory, per
process (each replica counts on its own), at most :data:`MAX_ADDRESSES` addresses (the least
recently failed are forgotten first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from starlette.types import Scope

from domain.limits import Limits, refill
from services.gateway.problems import ProblemError

__all__ = ["MAX_ADDRESSES", "FailedLogins", "client_address"]

MAX_ADDRESSES: Final = 10_000


def client_address(scope: Scope) -> str:
    """The caller's address as the server saw it (the forwarded one behind a trusted proxy)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class FailedLogins:
    """The failure buckets of the addresses that failed lately (see the module's doc)."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = Limits(rate_per_second, burst, None)
        self._max = max_addresses
        self._clock = clock
        #: address -> (failures left, when counted), least recently failed first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, address: str) -> None:
        """Raise 429 ``AUTHENTICATION_THROTTLED`` while ``address`` has no failure left."""
        left = self._left(address)
        if left < 1.0:
            wait = math.ceil((1.0 - left) / self._limits.rate_per_second)
            raise ProblemError(
                429,
                "Too many failed authentications",
                "Too many requests from this address failed to authenticate; retry later.",
                code="AUTHENTICATION_THROTTLED",
                headers={"Retry-After": str(max(1, wait))},
            )

    def failed(self, address: str) -> None:
        """Count one failed authentication of ``address``."""
        self._buckets[address] = (max(0.0, self._left(address) - 1.0), self._clock())
        self._buckets.move_to_end(address)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)

    def _left(self, address: str) -> float:
        counted = self._buckets.get(address)
        if counted is None:
            return float(self._limits.burst)
        left, at = counted
        return refill(left, self._clock() - at, self._limits)
