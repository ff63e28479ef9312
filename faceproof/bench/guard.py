"""`faceproof bench guard`: what the gateway's request guard costs per MiB of body, on honest and on
crafted bodies (docs/benchmarks.md).

Two figures per body: ``scan`` is the linear JSON scan alone (services/intake/json_scan.py, the
whole body, no early stop); ``guard`` is the ASGI middleware as the gateway runs it (headers,
authentication by the static token, the body read in 64 KiB messages as uvicorn hands it over,
the scan in a worker thread, the body passed on), with nothing behind it. No network, no database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from starlette.types import Scope

from faceproof.bench.environment import machine_info
from faceproof.bench.stats import ms_summary
from infra.settings import Settings
from services.gateway.auth import Authenticator, Principal
from services.gateway.body_rules import BodyRules
from services.gateway.limits import RequestGuard
from services.intake.json_scan import scan_json

__all__ = ["GuardBench", "guard_bodies", "run_guard_bench"]

MiB = 1024 * 1024
_TOKEN = "bench-guard-token"
_MESSAGE_BYTES = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class GuardBench:
    #: Size of each body in MiB (the crafted ones; the honest compare body is as close as it gets).
    size_mib: float = 8.0
    #: Timed rounds per body (after one warm-up).
    rounds: int = 5


def guard_bodies(size: int) -> dict[str, bytes]:
    """Bodies of about ``size`` bytes: an honest compare (two base64 images) and four crafted ones."""
    image = base64.b64encode(os.urandom(max(1, size // 2 * 3 // 4 - 64))).decode()
    field = b'{"reference": "'
    fill = max(0, size - len(field))
    return {
        "benign_compare": json.dumps({"source": image, "target": image, "qualityFilter": "LOW"}).encode(),
        # one string that never ends, all escaped quotes: the old regex's quadratic worst case
        "crafted_unterminated": field + b'\\"' * (fill // 2),
        # a quote at every byte: every byte is structural
        "crafted_quotes": field + b'"' * fill,
        # backslashes only: every byte starts or ends an escape
        "crafted_backslashes": field + b"\\" * fill,
        # brackets as deep as the body allows (the guard stops at the depth limit)
        "crafted_deep": b"[" * size,
    }


class _Keys:
    async def authenticate(self, key: str) -> None:
        return None


async def _admit(authenticator: Authenticator, _: Scope, authorization: str | None) -> Principal:
    return await authenticator(authorization)  # no rate limit: the bench measures the guard alone


async def _sink(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _guard_call(guard: RequestGuard, body: bytes) -> Callable[[], Awaitable[int]]:
    headers = [
        (b"authorization", f"Bearer {_TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {"type": "http", "method": "POST", "path": "/v1/compare", "query_string": b"", "headers": headers}

    async def call() -> int:
        offsets = iter(range(0, len(body), _MESSAGE_BYTES))
        status = 0

        async def receive() -> dict[str, Any]:
            start = next(offsets, len(body))
            end = start + _MESSAGE_BYTES
            return {"type": "http.request", "body": body[start:end], "more_body": end < len(body)}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await guard(scope, receive, send)
        return status

    return call


def _timed(rounds: int, run: Callable[[], T]) -> tuple[list[float], float, T]:
    """Wall-clock samples, CPU seconds of the process per round (all threads: the guard scans
    large bodies in a worker thread), and the last result."""
    result = run()  # warm-up
    samples = []
    cpu_started = time.process_time()
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        samples.append(time.perf_counter() - started)
    return samples, (time.process_time() - cpu_started) / rounds, result


def _run(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[int]]) -> int:
    async def once() -> int:
        return await call()

    return loop.run_until_complete(once())


def run_guard_bench(bench: GuardBench) -> dict[str, Any]:
    size = int(bench.size_mib * MiB)
    settings = Settings(max_body_bytes=max(size * 2, 1024 * 1024), api_token=_TOKEN)
    guard = RequestGuard(
        _sink,
        rules=BodyRules(settings),
        max_depth=settings.max_json_depth,
        admit=partial(_admit, Authenticator(_Keys(), _TOKEN)),
        body_timeout_s=settings.body_timeout_s,
        max_values=settings.max_json_values,
    )
    machine = machine_info()
    bodies: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    try:
        for name, body in guard_bodies(size).items():
            mib = len(body) / MiB
            scan_samples, scan_cpu_s, scan = _timed(bench.rounds, partial(scan_json, body))
            call = _guard_call(guard, body)
            guard_samples, guard_cpu_s, status = _timed(bench.rounds, partial(_run, loop, call))
            scan_ms = ms_summary(scan_samples)
            guard_ms = ms_summary(guard_samples)
            bodies[name] = {
                "bytes": len(body),
                "scan_ms": scan_ms,
                "scan_ms_per_mib": round(scan_ms["p50"] / mib, 3),
                "scan_cpu_ms_per_mib": round(scan_cpu_s * 1000 / mib, 3),
                "guard_ms": guard_ms,
                "guard_ms_per_mib": round(guard_ms["p50"] / mib, 3),
                "guard_cpu_ms_per_mib": round(guard_cpu_s * 1000 / mib, 3),
                "guard_status": status,
                "depth": scan.depth,
                "nul": scan.nul,
            }
    finally:
        loop.close()
    return {
        "size_mib": bench.size_mib,
        "rounds": bench.rounds,
        "max_json_depth": settings.max_json_depth,
        "bodies": bodies,
        "worst_scan_ms_per_mib": max(body["scan_ms_per_mib"] for body in bodies.values()),
        "worst_scan_cpu_ms_per_mib": max(body["scan_cpu_ms_per_mib"] for body in bodies.values()),
        "machine": machine,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
    }
