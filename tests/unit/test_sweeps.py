"""Sweeps outlive their failures: one item failing does not stop the others, and the loop survives
any exception (with backoff), each failure counted in faceproof_sweep_failures_total."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from infra.sweeps import ITEM, SWEEP, backoff_s, each, run_forever
from infra.telemetry.metrics import REGISTRY


def failures(sweeper: str, scope: str) -> float:
    value = REGISTRY.get_sample_value("faceproof_sweep_failures_total", {"sweeper": sweeper, "scope": scope})
    return value or 0.0


async def test_one_failing_item_is_counted_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    before = failures("unit-each", ITEM)
    seen: list[str] = []

    async def step(item: str) -> int:
        seen.append(item)
        if item == "b":
            raise KeyError("embedding 0.123 of b")  # the text must not reach the logs
        return len(seen)

    with caplog.at_level(logging.WARNING, logger="faceproof.sweeps"):
        done = await each("unit-each", ["a", "b", "c"], step, name=lambda item: f"session {item}")

    assert seen == ["a", "b", "c"]
    assert done == [("a", 1), ("c", 3)]
    assert failures("unit-each", ITEM) == before + 1
    assert "session b" in caplog.text and "KeyError" in caplog.text
    assert "0.123" not in caplog.text


async def test_the_loop_survives_any_exception_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    before = failures("unit-loop", SWEEP)
    calls: list[float] = []
    recovered = asyncio.Event()

    async def sweep() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) <= 3:
            raise [ValueError, RuntimeError, ZeroDivisionError][len(calls) - 1]("boom")
        if len(calls) >= 5:
            recovered.set()

    with caplog.at_level(logging.WARNING, logger="faceproof.sweeps"):
        task = asyncio.create_task(run_forever("unit-loop", sweep, interval_s=0.05, max_backoff_s=5))
        await asyncio.wait_for(recovered.wait(), timeout=10)
        assert not task.done()  # still sweeping
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert failures("unit-loop", SWEEP) == before + 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    # 0.1, 0.2, 0.4 s after the failures in a row (sleeps never end early), then the usual 0.05 s
    assert all(round(gap, 2) >= wait for gap, wait in zip(gaps, (0.1, 0.2, 0.4, 0.05), strict=False))
    assert gaps[3] < 0.4
    assert "ZeroDivisionError" in caplog.text


def test_backoff_doubles_up_to_its_cap_and_never_below_the_interval() -> None:
    assert backoff_s(0, 2.0) == 2.0
    assert [backoff_s(n, 2.0, 30.0) for n in (1, 2, 3, 4, 5)] == [4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_s(3, 300.0, 60.0) == 300.0
