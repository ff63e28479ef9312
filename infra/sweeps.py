"""Periodic sweeps that outlive their failures (docs/reliability.md, "Sweepers").

A sweeper walks a batch of items (overdue sessions, sessions past retention, overdue flows).

* :func:`each` runs one step per item in isolation: an item whose step raises is logged (its id
  and the error's type, never the error's text, which could quote a row or an object key) and
  counted; the other items go on, and the next sweep tries the failed one again.
* :func:`run_forever` calls a sweep every ``interval_s`` and survives any exception: the failure
  is logged and counted, and the next try waits longer (doubling up to ``max_backoff_s``) until a
  sweep goes through again. Only cancellation (the worker stopping) ends it.

Both count in ``faceproof_sweep_failures_total{sweeper, scope}`` (scope ``item`` or ``sweep``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, NoReturn, TypeVar

from infra.telemetry.metrics import SWEEP_FAILURES

__all__ = ["ITEM", "SWEEP", "backoff_s", "each", "run_forever"]

log = logging.getLogger("faceproof.sweeps")

T = TypeVar("T")
R = TypeVar("R")

#: Label values of the metric's ``scope``.
ITEM: Final = "item"
SWEEP: Final = "sweep"
#: Longest wait after failed sweeps by default.
MAX_BACKOFF_S: Final = 60.0


async def each(
    sweeper: str,
    items: Iterable[T],
    step: Callable[[T], Awaitable[R]],
    *,
    name: Callable[[T], str] = str,
) -> list[tuple[T, R]]:
    """Run ``step`` on every item; the (item, result) pairs of the steps that went through."""
    done: list[tuple[T, R]] = []
    for item in items:
        try:
            done.append((item, await step(item)))
        except Exception as error:  # one item must not stop the others (nor the sweeper)
            SWEEP_FAILURES.labels(sweeper, ITEM).inc()
            log.warning(
                "%s sweep: %s failed (%s); the next sweep retries it", sweeper, name(item), _kind(error)
            )
    return done


def backoff_s(failures: int, interval_s: float, max_backoff_s: float = MAX_BACKOFF_S) -> float:
    """How long to wait after ``failures`` sweeps failed in a row (0: the usual interval)."""
    if failures <= 0:
        return interval_s
    return max(interval_s, min(max_backoff_s, interval_s * 2.0**failures))


async def run_forever(
    sweeper: str,
    sweep: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> NoReturn:
    """Sweep now, then every ``interval_s``, whatever a sweep raises (until cancelled)."""
    failures = 0
    while True:
        try:
            await sweep()
        except Exception as error:  # the loop must outlive anything a sweep raises
            failures += 1
            SWEEP_FAILURES.labels(sweeper, SWEEP).inc()
            wait = backoff_s(failures, interval_s, max_backoff_s)
            log.warning(
                "%s sweep failed (%s, %d in a row); again in %.1f s", sweeper, _kind(error), failures, wait
            )
        else:
            failures = 0
            wait = interval_s
        await asyncio.sleep(wait)


def _kind(error: BaseException) -> str:
    return type(error).__name__
