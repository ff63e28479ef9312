"""`faceproof bench compare`: end-to-end ``POST /v1/compare`` latency and throughput.

Order of one run: start the stack (or use ``--url``), wait until the gateway is ready and every
matcher has subscribed, send warm-up requests (each matcher decodes and runs the models on real
images at least once), then time the same pairs **in this process** through the matcher's own
``handle_compare`` and ``OnnxFaceEngine``, built as the matcher builds them (same pack, intra-op
threads, thread pool and micro-batcher; decode, detect, align, quality, embed, score), one pair at
a time, and drive the load. At ``--concurrency 1`` the two take turns: each request's pair is
compared in process right before the request is sent, so that the baseline and the requests see
the same load from the machine's other jobs (one compare runs at a time, either here or in the
stack; the in-process time is left out of ``rps``). At higher concurrency the baseline runs
alone, before the load (``--inprocess-rounds`` rounds over the pairs); ``baseline`` in the result
says which. The **overhead ratio** is end-to-end p50 / in-process p50: what HTTP, JSON and base64,
the gateway, RabbitMQ and the worker's message handling add to the matcher's work itself. It is
meaningful at ``--concurrency 1`` (no queueing); at higher concurrency it includes waiting for a
core.

CPU time is counted too, because wall-clock times on a shared machine depend on what else runs:
``stack_cpu_ms_per_request`` (gateway + matcher processes, from ``/proc``; RabbitMQ's own CPU is
not included) over ``inprocess_cpu_ms_per_compare`` is the ``cpu_overhead_ratio``,
``gateway_cpu_ms_per_request`` is the gateway's part of it (all plumbing: no model runs there), and
``load_client_cpu_ms_per_request`` is what the load generator itself used. With ``--profile DIR``,
py-spy samples the gateway and every matcher during the load (:mod:`faceproof.bench.profile`);
the result's ``profile`` holds each process's top items.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.engine import make_url

from contracts.values import ImageData
from faceproof.bench.environment import BenchError, machine_info, process_cpu_s
from faceproof.bench.load import LoadResult, check_local_url, drive_load
from faceproof.bench.profile import sampling, top_items
from faceproof.bench.stack import StackConfig, running_stack, terminate_on_sigterm
from faceproof.bench.stats import evenly, ms_summary, rate

if TYPE_CHECKING:
    from infra.settings import Settings

__all__ = [
    "DEFAULT_PAIRS",
    "CompareBench",
    "compare_body",
    "default_pairs",
    "matcher_settings",
    "overhead_ratio",
    "run_compare_bench",
]

DEFAULT_PAIRS: Final = 10
_MAX_PIXELS: Final = 40_000_000
Warn = Callable[[str], None]
ImagePair = tuple[Path, Path]


@dataclass(frozen=True)
class CompareBench:
    pairs: Sequence[ImagePair]
    models_dir: Path
    pack: str
    broker_url: str
    workers: int = 1
    concurrency: int = 1
    duration_s: float = 20.0
    max_requests: int = 100_000
    url: str | None = None
    token: str | None = None
    inference_threads: int = 0
    max_target_faces: int = 20
    matcher_concurrency: int = 2
    inprocess_rounds: int = 5
    warmup_requests: int | None = None
    #: py-spy the stack's processes during the load into this folder (``--profile``).
    profile_dir: Path | None = None
    #: The stack's database (``--database-url``: one the bench may migrate and write, such as a
    #: fresh PostgreSQL database, as deployed); None: a temporary SQLite file.
    database_url: str | None = None


def default_pairs(data_dir: Path, count: int = DEFAULT_PAIRS) -> list[ImagePair]:
    """``count`` pairs spread over LFW dev-test's pairs.csv (same and different people alike)."""
    from faces.fit_calibration import read_pairs

    root = data_dir / "faces" / "lfw-devtest"
    pairs_csv = root / "pairs.csv"
    if not pairs_csv.is_file():
        raise BenchError(f"{pairs_csv} not found; pass --pairs")
    return [(root / pair.file_a, root / pair.file_b) for pair in evenly(read_pairs(pairs_csv), count)]


def compare_body(source: bytes, target: bytes) -> bytes:
    """The JSON body of ``POST /v1/compare`` for two images."""
    return json.dumps(
        {"source": base64.b64encode(source).decode(), "target": base64.b64encode(target).decode()}
    ).encode()


def overhead_ratio(end_to_end_p50_ms: float, inprocess_p50_ms: float) -> float:
    """End-to-end p50 / in-process p50, 3 decimals."""
    if inprocess_p50_ms <= 0:
        raise ValueError("the in-process p50 must be positive")
    return round(end_to_end_p50_ms / inprocess_p50_ms, 3)


def database_backend(database_url: str | None) -> str:
    """The stack's database as the result names it (never the URL: it may hold a password)."""
    return "sqlite" if database_url is None else make_url(database_url).get_backend_name()


def matcher_settings(config: CompareBench) -> Settings:
    """The settings the benchmark's matchers run with (environment plus the command's options)."""
    from infra.settings import load_settings

    return load_settings().model_copy(
        update={
            "model_pack": config.pack,
            "models_dir": config.models_dir,
            "inference_threads": config.inference_threads,
            "matcher_concurrency": config.matcher_concurrency,
            "max_target_faces": config.max_target_faces,
        }
    )


class _InlineImages:
    async def read(self, image: ImageData) -> bytes:
        assert image.inline is not None
        return image.inline


class _InProcess:
    """The matcher's own ``handle_compare`` on its own engine, in this process, one pair at a time.

    Built exactly as ``services.matcher.main.serve`` builds it (pack, intra-op threads resolved
    from ``FACEPROOF_INFERENCE_THREADS`` and ``FACEPROOF_MATCHER_CONCURRENCY``, thread pool, micro-
    batcher), so the only difference from the end-to-end path is the plumbing: HTTP, JSON and
    base64, the gateway, RabbitMQ and the worker's message handling. ``compare(index)`` times one
    pair (wall time, and this process's CPU time: nothing else of this process runs meanwhile).
    """

    def __init__(self, config: CompareBench, images: Sequence[tuple[bytes, bytes]]) -> None:
        self._config = config
        self._images = images
        self._source = _InlineImages()
        self.samples: list[float] = []
        self.cpu_s = 0.0

    async def __aenter__(self) -> _InProcess:
        from contracts.commands import CompareFaces
        from services.matcher.main import load_engine

        settings = matcher_settings(self._config)
        self.intra_op_threads = settings.resolved_inference_threads
        self._engine = await load_engine(settings)
        self._commands = [
            CompareFaces(
                correlation_id=f"bench-{index}",
                source=ImageData(inline=a),
                target=ImageData(inline=b),
                max_target_faces=settings.max_target_faces,
            )
            for index, (a, b) in enumerate(self._images)
        ]
        try:
            for index in range(len(self._commands)):  # warm-up round, not counted
                await self._compare(index)
        except BaseException:
            await self._engine.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._engine.close()

    async def compare(self, index: int) -> None:
        cpu_started, started = time.process_time(), time.perf_counter()
        await self._compare(index)
        self.samples.append(time.perf_counter() - started)
        self.cpu_s += time.process_time() - cpu_started

    async def _compare(self, index: int) -> None:
        from services.matcher.handlers import handle_compare

        event = await handle_compare(self._commands[index], engine=self._engine, images=self._source)
        if event.error is not None:
            raise BenchError(f"in-process compare failed: {event.error.code}")

    def summary(self) -> dict[str, float]:
        return {
            **ms_summary(self.samples),
            "cpu_ms": round(self.cpu_s * 1000.0 / max(1, len(self.samples)), 3),
            "intra_op_threads": self.intra_op_threads,
        }


async def _inprocess_before_load(
    config: CompareBench, images: Sequence[tuple[bytes, bytes]]
) -> dict[str, float]:
    """``--inprocess-rounds`` rounds over the pairs, before the load (``--concurrency`` above 1)."""
    async with _InProcess(config, images) as baseline:
        for _ in range(max(1, config.inprocess_rounds)):
            for index in range(len(images)):
                await baseline.compare(index)
    return baseline.summary()


def _check_warm_up(result: LoadResult, logs: Callable[[], str]) -> None:
    if result.errors or not result.latencies_s:
        raise BenchError(f"warm-up requests failed ({dict(result.errors)}); logs:\n{logs()}")


@dataclass(frozen=True)
class _Window:
    """The load and what the processes used meanwhile (CPU seconds; None: cannot tell)."""

    load: LoadResult
    stack_cpu_s: float | None
    gateway_cpu_s: float | None
    #: This process's CPU less the in-process compares': the load generator's.
    client_cpu_s: float


def _used(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def _window(
    run_load: Callable[[], Awaitable[LoadResult]],
    *,
    stack_cpu_s: Callable[[], float | None],
    gateway_cpu_s: Callable[[], float | None],
    profiled: Callable[[], AbstractContextManager[None]],
    inprocess_cpu_s: Callable[[], float] = lambda: 0.0,
) -> _Window:
    stack, gateway, client, inprocess = stack_cpu_s(), gateway_cpu_s(), time.process_time(), inprocess_cpu_s()
    with profiled():
        load = await run_load()
    return _Window(
        load,
        _used(stack, stack_cpu_s()),
        _used(gateway, gateway_cpu_s()),
        time.process_time() - client - (inprocess_cpu_s() - inprocess),
    )


def _per_request_ms(seconds: float | None, ok: int) -> float | None:
    return None if seconds is None else round(seconds * 1000.0 / ok, 3)


def _measure(
    config: CompareBench,
    url: str,
    token: str | None,
    images: Sequence[tuple[bytes, bytes]],
    logs: Callable[[], str],
    stack_cpu_s: Callable[[], float | None] = lambda: None,
    profiled: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    gateway_cpu_s: Callable[[], float | None] = lambda: None,
) -> dict[str, Any]:
    bodies = [compare_body(source, target) for source, target in images]
    warm = config.warmup_requests or max(len(bodies), 2 * config.workers * config.matcher_concurrency)
    warm_up = asyncio.run(
        drive_load(
            url,
            bodies,
            token=token,
            concurrency=max(config.workers, config.concurrency),
            duration_s=120,
            max_requests=warm,
        )
    )
    _check_warm_up(warm_up, logs)

    def load(before_each: Callable[[int], Awaitable[None]] | None = None) -> Awaitable[LoadResult]:
        return drive_load(
            url,
            bodies,
            token=token,
            concurrency=config.concurrency,
            duration_s=config.duration_s,
            max_requests=config.max_requests,
            before_each=before_each,
        )

    counted = functools.partial(
        _window, stack_cpu_s=stack_cpu_s, gateway_cpu_s=gateway_cpu_s, profiled=profiled
    )
    interleaved = config.concurrency == 1

    async def taking_turns() -> tuple[dict[str, float], _Window]:
        async with _InProcess(config, images) as baseline:
            window = await counted(lambda: load(baseline.compare), inprocess_cpu_s=lambda: baseline.cpu_s)
        return baseline.summary(), window

    if interleaved:  # each request's pair in process right before it, in the same minutes
        inprocess, window = asyncio.run(taking_turns())
    else:  # C clients keep the stack busy: the baseline alone, before them
        inprocess = asyncio.run(_inprocess_before_load(config, images))
        window = asyncio.run(counted(load))
    result = window.load
    if not result.latencies_s:
        raise BenchError(f"no request succeeded ({dict(result.errors)}); logs:\n{logs()}")
    end_to_end = ms_summary(result.latencies_s)
    ok = len(result.latencies_s)
    stack_cpu_ms = _per_request_ms(window.stack_cpu_s, ok)
    return {
        "p50_ms": end_to_end["p50"],
        "p95_ms": end_to_end["p95"],
        "p99_ms": end_to_end["p99"],
        "mean_ms": end_to_end["mean"],
        "rps": rate(ok, result.elapsed_s),
        "baseline": "interleaved" if interleaved else "before_load",
        "inprocess_p50_ms": inprocess["p50"],
        "inprocess_p95_ms": inprocess["p95"],
        "inprocess_samples": inprocess["n"],
        "overhead_ratio": overhead_ratio(end_to_end["p50"], inprocess["p50"]),
        "matcher_intra_op_threads": inprocess["intra_op_threads"],
        "inprocess_cpu_ms_per_compare": inprocess["cpu_ms"],
        "stack_cpu_ms_per_request": stack_cpu_ms,
        "cpu_overhead_ratio": None
        if stack_cpu_ms is None or inprocess["cpu_ms"] <= 0
        else round(stack_cpu_ms / inprocess["cpu_ms"], 3),
        "gateway_cpu_ms_per_request": _per_request_ms(window.gateway_cpu_s, ok),
        "load_client_cpu_ms_per_request": _per_request_ms(window.client_cpu_s, ok),
        "requests": result.requests,
        "ok": ok,
        "errors": sum(result.errors.values()),
        "errors_by_kind": dict(result.errors),
        "elapsed_s": round(result.elapsed_s, 2),
        "warmup_requests": warm_up.requests,
    }


def _profiler(out_dir: Path | None, pids: dict[str, int]) -> Callable[[], AbstractContextManager[None]]:
    if out_dir is None:
        return contextlib.nullcontext
    return lambda: sampling(pids, out_dir)


def run_compare_bench(config: CompareBench, warn: Warn) -> dict[str, Any]:
    if not config.pairs:
        raise BenchError("no image pairs")
    if config.url is not None and config.profile_dir is not None:
        raise BenchError("--profile samples the bench's own stack: leave out --url")
    images = [(source.read_bytes(), target.read_bytes()) for source, target in config.pairs]
    machine = machine_info()
    header: dict[str, Any] = {
        "pack": config.pack,
        "workers": config.workers if config.url is None else None,
        "concurrency": config.concurrency,
        "duration_s": config.duration_s,
        "max_requests": config.max_requests,
        "pairs": len(images),
        "inference_threads": config.inference_threads,
        "matcher_concurrency": config.matcher_concurrency,
        "database": None if config.url is not None else database_backend(config.database_url),
        "machine": machine,
    }
    with terminate_on_sigterm():
        if config.url is not None:
            url = check_local_url(config.url)
            measured = _measure(config, url, config.token, images, lambda: "(external gateway: no logs)")
            header["url"] = url
        else:
            stack_config = StackConfig(
                workers=config.workers,
                models_dir=config.models_dir,
                broker_url=config.broker_url,
                pack=config.pack,
                extra_env={
                    "FACEPROOF_INFERENCE_THREADS": str(config.inference_threads),
                    "FACEPROOF_MATCHER_CONCURRENCY": str(config.matcher_concurrency),
                    "FACEPROOF_MAX_TARGET_FACES": str(config.max_target_faces),
                },
                database_url=config.database_url,
            )
            with running_stack(stack_config, warn) as stack:
                profiled = _profiler(config.profile_dir, {name: p.pid for name, p in stack.processes.items()})
                gateway = stack.processes["gateway"].pid
                measured = _measure(
                    config,
                    stack.url,
                    stack.token,
                    images,
                    stack.log_tail,
                    stack.cpu_seconds,
                    profiled,
                    lambda: process_cpu_s(gateway),
                )
                stack.check_alive()
                header["vhost"] = stack.vhost.name or "(broker URL's own)"
            if config.profile_dir is not None:
                header["profile"] = {
                    name: top_items(config.profile_dir / f"{name}.txt") for name in stack.processes
                }
    return {**measured, **header, "load_average_after": machine_info()["load_average"]}
