"""Each client's share of a notifier: how many of its callback attempts (or reference fetches)
run at once.

Callback attempts run in the DeliverCallback consumer, a few at a time (the broker's prefetch),
each up to ``FACEPROOF_CALLBACK_TIMEOUT_S``; reference fetches likewise in the FetchReferences
consumer, each up to twice ``FACEPROOF_FETCH_TIMEOUT_S`` (the list, then its images). Without a
share, one client whose controller answers slowly (or never) fills every place with its own work
and every other client's callbacks and decisions wait behind them. With one, work of a client
already at its share is put off (a second or so, no attempt counted) and the place goes to the next
message (docs/security.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ClientShares"]


class ClientShares:
    """At most ``per_client`` attempts (or fetches) of one client at a time in this process."""

    def __init__(self, per_client: int) -> None:
        self.per_client = max(1, per_client)
        self._running: Counter[str] = Counter()

    @contextmanager
    def place(self, client: str) -> Iterator[bool]:
        """True (and the place held until the block ends) when ``client`` is under its share."""
        if self._running[client] >= self.per_client:
            yield False
            return
        self._running[client] += 1
        try:
            yield True
        finally:
            self._running[client] -= 1
            if not self._running[client]:
                del self._running[client]
