"""Paced redelivery: a message whose handler failed because a dependency is down is nacked only
after a pause that grows with its deliveries.

A handler that raises is nacked and the quorum queue redelivers the message at once; past
``x-delivery-limit`` deliveries it is dead-lettered. While Postgres or RabbitMQ restarts, every
delivery fails in milliseconds, so without a pause a message would spend its whole limit in the
first second of a restart and be dead-lettered (a Postgres restart under load dead-lettered three
frame events). With the pause, the limit spans ``sum(redelivery_delay(n) for n in range(limit + 1))``
seconds (2 + 4 + 8 + 16 = 30 s with the default limit of 3): a restart shorter than that loses
nothing; a longer outage still dead-letters (``faceproof dlq replay`` brings the letters back).

Only errors that say "try again later" are paced: :class:`~infra.db.errors.DatabaseUnavailable` and
the broker's own (:data:`infra.broker.BROKER_DOWN_ERRORS`), raised directly or as the cause of the
error a service translated them into (a failed publish, an intake ``Unavailable``). Any other error
is nacked at once, as before: a poison message reaches its dead-letter queue without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from faststream import BaseMiddleware

from infra.broker import BROKER_DOWN_ERRORS
from infra.db.errors import DatabaseUnavailable

__all__ = ["PacedRedelivery", "is_retryable", "redelivery_delay"]

FIRST_DELAY_S: Final = 2.0
MAX_DELAY_S: Final = 30.0
_RETRYABLE: Final[tuple[type[BaseException], ...]] = (DatabaseUnavailable, *BROKER_DOWN_ERRORS)
log = logging.getLogger("faceproof.broker")


def redelivery_delay(delivered_before: int) -> float:
    """Seconds to wait before nacking a message delivered ``delivered_before`` times already."""
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** max(0, delivered_before))


def is_retryable(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says that a dependency is down."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _RETRYABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class PacedRedelivery(BaseMiddleware[Any, Any]):
    """Sleeps :func:`redelivery_delay` before a retryable failure reaches the nack (FastStream's
    acknowledgement middleware is the outermost one, so it nacks after this returns)."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            return await call_next(msg)
        except Exception as error:
            if is_retryable(error):
                headers = getattr(msg, "headers", None) or {}
                delivered = headers.get("x-delivery-count", 0)
                delay = redelivery_delay(delivered if isinstance(delivered, int) else 0)
                log.warning("%s: dependency down; nacked in %.0f s", type(error).__name__, delay)
                await asyncio.sleep(delay)
            raise
