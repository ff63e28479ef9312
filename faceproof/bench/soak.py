"""`faceproof bench soak`: compares at a steady rate plus concurrent liveness sessions, for minutes.

What it answers: does every request get an answer under a steady mixed load (``lost`` is requests
sent minus requests answered with any HTTP status), how do compare latencies spread (p50/p95/p99
of the 200 answers), and does any service's memory grow (RSS of each process from ``/proc``, at
the start, the middle and the end of the load, and its maximum).

It starts its own stack (the gateway, one matcher, the call agent and the liveness worker, on a
temporary SQLite database, a local object store and a RabbitMQ vhost of its own; see
:mod:`faceproof.bench.stack`) on 127.0.0.1 and stops it afterwards. The compares are an **open
loop**: request *i* is sent at ``start + i / rate`` whether or not earlier ones were answered, so a
slow stack shows up as latency and backlog instead of a lower request rate. Bounded in count
(``rate * duration`` compares at most) and in time (the duration, then each request's timeout;
a session started before the end runs to its own end, ``session_timeout_s`` at most).

The liveness sessions are scripted subjects joining over real WebRTC (aiortc), the way the hosted
page does: :mod:`faceproof.testing.webrtc_subject` and :mod:`faceproof.testing.scripted_subject`
with the annotated liveportrait video in ``../shared/data/video``; so ``--sessions`` needs the
shared data. Each of ``sessions`` loops creates a session, joins, answers, waits
for its terminal status, and starts the next, until the duration is over; each loop runs at
least one session, even when loading the video and the models took the whole duration.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from faceproof.bench.compare import ImagePair, compare_body
from faceproof.bench.environment import BenchError, data_dir, machine_info
from faceproof.bench.load import check_local_url
from faceproof.bench.stack import StackConfig, running_stack, terminate_on_sigterm
from faceproof.bench.stats import ms_summary, rate

__all__ = ["RssSampler", "SoakBench", "read_rss_mib", "run_soak_bench", "send_times"]

Warn = Callable[[str], None]
TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "EXPIRED"})
#: Challenges the annotated video answers (faceproof/testing/video_segments.json).
SESSION_SETTINGS: Final = {"challenges": 2, "challengeTypes": ["TURN_LEFT", "TURN_RIGHT"]}
SESSION_VIDEO: Final = "liveportrait_d3.mp4"


@dataclass(frozen=True)
class SoakBench:
    pairs: Sequence[ImagePair]
    models_dir: Path
    pack: str
    broker_url: str
    duration_s: float = 120.0
    rate_per_s: float = 2.0
    sessions: int = 2
    request_timeout_s: float = 30.0
    session_timeout_s: float = 120.0
    rss_interval_s: float = 2.0
    warmup_requests: int = 3


def send_times(rate_per_s: float, duration_s: float) -> list[float]:
    """Offsets (s) of an open loop's requests: ``i / rate`` for every one due before ``duration_s``."""
    if rate_per_s <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    count = max(1, math.ceil(rate_per_s * duration_s - 1e-9))
    return [index / rate_per_s for index in range(count)]


def read_rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``VmRSS`` in ``/proc/PID/status``); None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class RssSampler:
    """RSS of named processes over time: ``samples[name]`` is a list of (seconds since start, MiB)."""

    pids: Mapping[str, int]
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def sample(self) -> None:
        at = time.monotonic() - self.started
        for name, pid in self.pids.items():
            rss = read_rss_mib(pid)
            if rss is not None:
                self.samples.setdefault(name, []).append((at, rss))

    def summary(self, middle_at: float) -> dict[str, dict[str, float]]:
        """Per process: start, middle (the sample nearest ``middle_at``), end, max, growth (end - start)
        and the second half's growth (end - middle: after the warm-up of models and pools, memory
        that keeps growing is a leak)."""
        result = {}
        for name, points in self.samples.items():
            middle = min(points, key=lambda point: abs(point[0] - middle_at))[1]
            start, end = points[0][1], points[-1][1]
            result[name] = {
                "start": start,
                "middle": middle,
                "end": end,
                "max": max(rss for _, rss in points),
                "growth": round(end - start, 1),
                "growth_second_half": round(end - middle, 1),
            }
        return result


@dataclass
class CompareTally:
    sent: int = 0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    #: Answers other than 200 and the documented 503/504 problem+json, by status.
    undocumented: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def report(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": self.answered,
            "lost": self.sent - self.answered,
            "by_status": dict(sorted(self.statuses.items())),
            "errors": dict(self.errors),
            "undocumented": dict(self.undocumented),
            "slowest_ms": round(self.slowest_s * 1000),
            "latency_ms": ms_summary(self.latencies_s) if self.latencies_s else None,
            "sent_per_s": rate(self.sent, elapsed_s),
        }


async def _compares(
    client: httpx.AsyncClient,
    bodies: Sequence[bytes],
    config: SoakBench,
    tally: CompareTally,
    done: Callable[[], bool] | None = None,
) -> float:
    """The open loop, for ``config.duration_s`` (or, with ``done``, until it says so); returns the
    seconds from the first send to the last answer."""
    loop = asyncio.get_running_loop()

    async def one(body: bytes) -> None:
        started = time.perf_counter()
        try:
            response = await client.post("/v1/compare", content=body)
        except httpx.HTTPError as error:
            tally.errors[type(error).__name__] += 1
            return
        elapsed = time.perf_counter() - started
        tally.statuses[str(response.status_code)] += 1
        tally.slowest_s = max(tally.slowest_s, elapsed)
        if response.status_code == 200:
            tally.latencies_s.append(elapsed)
        elif response.status_code not in (503, 504) or not response.headers.get(
            "content-type", ""
        ).startswith("application/problem+json"):
            tally.undocumented[str(response.status_code)] += 1

    start = loop.time()
    tasks = []
    offsets = (
        send_times(config.rate_per_s, config.duration_s)
        if done is None
        else itertools.count(0.0, 1 / config.rate_per_s)
    )
    for index, offset in enumerate(offsets):
        if done is not None and done():
            break
        await asyncio.sleep(max(0.0, start + offset - loop.time()))
        tally.sent += 1
        tasks.append(asyncio.ensure_future(one(bodies[index % len(bodies)])))
    await asyncio.gather(*tasks)
    return loop.time() - start


@dataclass
class SessionTally:
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    durations_s: list[float] = field(default_factory=list)
    #: Every session created (its id), finished or not.
    ids: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "finished": sum(self.statuses.values()),
            "by_status": dict(sorted(self.statuses.items())),
            "reasons": dict(self.reasons.most_common()),
            "errors": dict(self.errors),
            "duration_ms": ms_summary(self.durations_s) if self.durations_s else None,
        }


async def _terminal_status(client: httpx.AsyncClient, session_id: str, until: float) -> dict[str, Any]:
    """The session's resource once its status is terminal; ``{"status": "UNFINISHED"}`` at ``until``
    (the gateway unreachable or answering 5xx meanwhile counts as not yet)."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            response = await client.get(f"/v1/sessions/{session_id}")
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            result: dict[str, Any] = response.json()
            if result.get("status") in TERMINAL:
                return result
        await asyncio.sleep(0.5)
    return {"status": "UNFINISHED"}


async def _session_loops(
    url: str, token: str, config: SoakBench, tally: SessionTally, done: Callable[[], bool]
) -> None:
    from faceproof.testing import webrtc_subject as webrtc
    from faceproof.testing.annotate import load_video_segments as load_segments
    from faceproof.testing.scripted_subject import Media as media_type
    from faceproof.testing.scripted_subject import ScriptedSubject as subject_type
    from services.liveness.analysis import FrameAnalyzer as analyzer_type

    video = data_dir() / "video" / SESSION_VIDEO
    if not video.is_file():
        raise BenchError(f"{video} not found (the shared data)")
    media = await asyncio.to_thread(media_type.from_path, video)
    analyzer = await asyncio.to_thread(analyzer_type.from_models_dir, config.models_dir, threads=1)
    segments = load_segments()
    loop = asyncio.get_running_loop()

    async def one(client: httpx.AsyncClient) -> None:
        started = loop.time()
        try:
            created = await client.post("/v1/sessions", json={"settings": SESSION_SETTINGS})
        except httpx.HTTPError as error:
            tally.errors[f"create {type(error).__name__}"] += 1
            await asyncio.sleep(1)
            return
        if created.status_code != 201:
            tally.errors[f"create {created.status_code}"] += 1
            await asyncio.sleep(1)
            return
        session = created.json()
        tally.ids.append(session["sessionId"])
        source = webrtc.ScriptedSource(subject_type(media, analyzer, segments=segments))
        try:
            await webrtc.run_subject(
                url, session["sessionId"], session["clientToken"], source, timeout_s=config.session_timeout_s
            )
        except (AssertionError, TimeoutError, OSError, httpx.HTTPError) as error:
            tally.errors[type(error).__name__] += 1
        status = await _terminal_status(client, session["sessionId"], loop.time() + config.session_timeout_s)
        tally.statuses[str(status.get("status", "UNFINISHED"))] += 1
        tally.reasons.update(str(reason) for reason in status.get("reasons") or [])
        tally.durations_s.append(loop.time() - started)

    async def session_loop() -> None:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
        ) as client:
            await one(client)  # at least one, even when loading the subject ate the duration
            while not done():
                await one(client)

    await asyncio.gather(*(session_loop() for _ in range(config.sessions)))


async def _soak(url: str, token: str, config: SoakBench, sampler: RssSampler) -> dict[str, Any]:
    base = check_local_url(url)
    images = [(a.read_bytes(), b.read_bytes()) for a, b in config.pairs]
    bodies = [compare_body(a, b) for a, b in images]
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        timeout=config.request_timeout_s,
        limits=limits,
        trust_env=False,
        follow_redirects=False,
    ) as client:
        for body in bodies[: config.warmup_requests]:
            warm = await client.post("/v1/compare", content=body)
            if warm.status_code != 200:
                raise BenchError(f"warm-up compare answered {warm.status_code}: {warm.text[:300]}")
        loop = asyncio.get_running_loop()
        sampler.started = time.monotonic()
        sampler.sample()
        stop_sampling = asyncio.Event()

        async def sample_forever() -> None:
            while not stop_sampling.is_set():
                await asyncio.sleep(config.rss_interval_s)
                sampler.sample()

        sampling = asyncio.ensure_future(sample_forever())
        compares, sessions = CompareTally(), SessionTally()
        work: list[asyncio.Future[Any]] = [asyncio.ensure_future(_compares(client, bodies, config, compares))]
        if config.sessions > 0:
            ends_at = loop.time() + config.duration_s
            work.append(
                asyncio.ensure_future(
                    _session_loops(base, token, config, sessions, lambda: loop.time() >= ends_at)
                )
            )
        started = loop.time()
        try:
            done = await asyncio.gather(*work)
        finally:
            stop_sampling.set()
            await sampling
            sampler.sample()
        elapsed = loop.time() - started
    return {
        "compares": compares.report(done[0]),
        "liveness_sessions": sessions.report(),
        "elapsed_s": round(elapsed, 1),
        "rss_mib": sampler.summary(middle_at=config.duration_s / 2),
    }


def run_soak_bench(config: SoakBench, warn: Warn) -> dict[str, Any]:
    if config.duration_s <= 0 or config.rate_per_s <= 0 or config.sessions < 0:
        raise BenchError("--duration and --rate must be positive, --sessions at least 0")
    header = {
        "duration_s": config.duration_s,
        "rate_per_s": config.rate_per_s,
        "sessions": config.sessions,
        "pairs": len(config.pairs),
        "pack": config.pack,
        "machine": machine_info(),
    }
    stack_config = StackConfig(
        workers=1,
        models_dir=config.models_dir,
        broker_url=config.broker_url,
        pack=config.pack,
        extra_env={"FACEPROOF_RATE_LIMITS": "false"},
        other_workers=("call-agent", "liveness") if config.sessions > 0 else (),
    )
    with terminate_on_sigterm(), running_stack(stack_config, warn) as stack:
        sampler = RssSampler({name: process.pid for name, process in stack.processes.items()})
        measured = asyncio.run(_soak(stack.url, stack.token, config, sampler))
        stack.check_alive()
    return {**header, **measured, "load_average_after": machine_info()["load_average"]}
