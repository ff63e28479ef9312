"""A bounded HTTP load generator for ``POST /v1/compare``, for this machine's own gateway only.

Bounded in count (``max_requests``) and in time (``duration_s``, plus one request timeout for the
last requests in flight); it refuses any host but 127.0.0.1 and localhost, ignores proxy settings
from the environment and never follows redirects, so it cannot be pointed at someone else's server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httpx

__all__ = ["LOCAL_HOSTS", "LoadResult", "check_local_url", "drive_load"]

LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
COMPARE_PATH: Final = "/v1/compare"


def check_local_url(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) on 127.0.0.1 or localhost; else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"{url!r}: only http:// or https:// URLs")
    if parts.hostname not in LOCAL_HOSTS:
        raise ValueError(f"{url!r}: the load generator only targets 127.0.0.1 or localhost")
    if parts.username or parts.password:
        raise ValueError(f"{url!r}: no credentials in the URL; use --token")
    return url.rstrip("/")


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    #: Wall time of the load, less the time spent in ``before_each`` (see :func:`drive_load`).
    elapsed_s: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + sum(self.errors.values())


async def drive_load(
    url: str,
    bodies: Sequence[bytes],
    *,
    token: str | None,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    request_timeout_s: float = 30.0,
    before_each: Callable[[int], Awaitable[None]] | None = None,
) -> LoadResult:
    """``concurrency`` closed-loop clients post ``bodies`` in turn until either bound is reached.

    Latency is counted for 200 answers only; anything else is an error keyed by status code or
    exception name. ``before_each`` (one client only) is awaited with the index of the next
    request's body before it is sent, outside its latency, and its time is left out of
    ``elapsed_s``: ``bench compare`` times the same pair in process there, so that the baseline
    and the requests take turns under the same machine load.
    """
    base = check_local_url(url)
    if not bodies:
        raise ValueError("no request bodies")
    if concurrency < 1 or max_requests < 1 or duration_s <= 0:
        raise ValueError("concurrency, max_requests and duration_s must be positive")
    if before_each is not None and concurrency != 1:
        raise ValueError("before_each takes turns with one client only")
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    result = LoadResult()
    issued = 0
    beside_s = 0.0  # in before_each
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal issued, beside_s
        while issued < max_requests and loop.time() < deadline:
            index = issued % len(bodies)
            issued += 1
            if before_each is not None:
                started = time.perf_counter()
                await before_each(index)
                beside_s += time.perf_counter() - started
            body = bodies[index]
            started = time.perf_counter()
            try:
                response = await client.post(COMPARE_PATH, content=body, headers=headers)
            except httpx.HTTPError as error:
                result.errors[type(error).__name__] += 1
                continue
            if response.status_code == 200:
                result.latencies_s.append(time.perf_counter() - started)
            else:
                result.errors[str(response.status_code)] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, timeout=request_timeout_s, limits=limits, trust_env=False, follow_redirects=False
    ) as client:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(duration_s + request_timeout_s):
                await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        except TimeoutError:
            result.errors["load_deadline"] += 1
        result.elapsed_s = time.perf_counter() - started - beside_s
    return result
