"""`faceproof bench compare`: end-to-end ``POST /v1/compare`` latency and throughput.

Order of one run: start the stack (or use ``--url``), wait until the gateway is ready and every
matcher has subscribed, send warm-up requests (each matcher decodes and runs the models on real
images at least once), then, with the stack idle, time the same pairs **in this process**
(decode both images, analyze both with the same pack and thread setting, score every target
face), then drive the load. The **overhead ratio** is end-to-end p50 / in-process p50: what the
gateway, JSON and base64, RabbitMQ and the worker's plumbing add to the face work itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from faceproof.bench.environment import BenchError, machine_info
from faceproof.bench.load import LoadResult, check_local_url, drive_load
from faceproof.bench.stack import StackConfig, running_stack, terminate_on_sigterm
from faceproof.bench.stats import evenly, ms_summary, rate

__all__ = [
    "DEFAULT_PAIRS",
    "CompareBench",
    "compare_body",
    "default_pairs",
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


def _inprocess(config: CompareBench, images: Sequence[tuple[bytes, bytes]]) -> dict[str, dict[str, float]]:
    """Decode + analyze both images + score, as the matcher does, timed per pair in this process.

    ``sequential``: one image after the other on this thread. ``parallel``: the two images on two
    threads, as the matcher runs them (its ``asyncio.gather`` over a thread pool), which is the
    stricter baseline for what the plumbing adds.
    """
    from faces.images import decode_image
    from faces.packs import load_pack
    from faces.pipeline import Face

    pipeline = load_pack(config.pack, config.models_dir, threads=config.inference_threads)
    pipeline.warm_up()

    def analyze(data: bytes, max_faces: int) -> list[Face]:
        return pipeline.analyze(decode_image(data, max_pixels=_MAX_PIXELS), max_faces=max_faces)

    def score(source_faces: list[Face], target_faces: list[Face]) -> int:
        if not source_faces:
            return 0
        return len(
            [pipeline.compare_embeddings(source_faces[0].embedding, f.embedding) for f in target_faces]
        )

    def sequential(source: bytes, target: bytes) -> int:
        return score(analyze(source, 1), analyze(target, config.max_target_faces))

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench-inprocess") as pool:

        def parallel(source: bytes, target: bytes) -> int:
            source_faces = pool.submit(analyze, source, 1)
            target_faces = pool.submit(analyze, target, config.max_target_faces)
            return score(source_faces.result(), target_faces.result())

        summaries: dict[str, dict[str, float]] = {}
        for name, compare in (("sequential", sequential), ("parallel", parallel)):
            for source, target in images:  # warm-up round
                compare(source, target)
            samples: list[float] = []
            for _ in range(max(1, config.inprocess_rounds)):
                for source, target in images:
                    started = time.perf_counter()
                    compare(source, target)
                    samples.append(time.perf_counter() - started)
            summaries[name] = ms_summary(samples)
    return summaries


def _check_warm_up(result: LoadResult, logs: Callable[[], str]) -> None:
    if result.errors or not result.latencies_s:
        raise BenchError(f"warm-up requests failed ({dict(result.errors)}); logs:\n{logs()}")


def _measure(
    config: CompareBench,
    url: str,
    token: str | None,
    images: Sequence[tuple[bytes, bytes]],
    logs: Callable[[], str],
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
    inprocess = _inprocess(config, images)
    load = asyncio.run(
        drive_load(
            url,
            bodies,
            token=token,
            concurrency=config.concurrency,
            duration_s=config.duration_s,
            max_requests=config.max_requests,
        )
    )
    if not load.latencies_s:
        raise BenchError(f"no request succeeded ({dict(load.errors)}); logs:\n{logs()}")
    end_to_end = ms_summary(load.latencies_s)
    return {
        "p50_ms": end_to_end["p50"],
        "p95_ms": end_to_end["p95"],
        "p99_ms": end_to_end["p99"],
        "mean_ms": end_to_end["mean"],
        "rps": rate(len(load.latencies_s), load.elapsed_s),
        "inprocess_p50_ms": inprocess["sequential"]["p50"],
        "inprocess_p95_ms": inprocess["sequential"]["p95"],
        "overhead_ratio": overhead_ratio(end_to_end["p50"], inprocess["sequential"]["p50"]),
        "inprocess_parallel_p50_ms": inprocess["parallel"]["p50"],
        "overhead_ratio_vs_parallel": overhead_ratio(end_to_end["p50"], inprocess["parallel"]["p50"]),
        "requests": load.requests,
        "ok": len(load.latencies_s),
        "errors": sum(load.errors.values()),
        "errors_by_kind": dict(load.errors),
        "elapsed_s": round(load.elapsed_s, 2),
        "warmup_requests": warm_up.requests,
    }


def run_compare_bench(config: CompareBench, warn: Warn) -> dict[str, Any]:
    if not config.pairs:
        raise BenchError("no image pairs")
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
            )
            with running_stack(stack_config, warn) as stack:
                measured = _measure(config, stack.url, stack.token, images, stack.log_tail)
                stack.check_alive()
                header["vhost"] = stack.vhost.name or "(broker URL's own)"
    return {**measured, **header, "load_average_after": machine_info()["load_average"]}
