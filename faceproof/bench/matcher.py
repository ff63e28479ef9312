"""`faceproof bench matcher`: in-process latency of each face stage, and pipeline throughput.

Latency: every image is decoded once (timed apart), then for ``iterations`` rounds each image is
detected, each detected face aligned and embedded on its own (batch of one), with a clock around
each stage. Sessions use ``latency_threads`` intra-op threads (0: onnxruntime's default, one per
core, as the service's ``FACEPROOF_INFERENCE_THREADS`` default).

Throughput: ``FacePipeline.analyze`` (detect + align + embed, decode excluded) on already decoded
images from 1, 2, 4 and 8 Python threads sharing one pipeline; onnxruntime releases the GIL while a
session runs. Measured twice: with one intra-op thread per session (``threads=1``: the threads of
the pool are the only parallelism) and with the latency setting (pool threads x intra-op threads
compete for the cores), so the interplay is visible rather than assumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from faceproof.bench.environment import BenchError, list_images, machine_info
from faceproof.bench.stats import evenly, ms_summary, rate

if TYPE_CHECKING:
    from faces.runtime import Precision

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PEOPLE",
    "MatcherBench",
    "default_images",
    "run_matcher_bench",
]

Image = npt.NDArray[np.uint8]

DEFAULT_CONCURRENCY: Final = (1, 2, 4, 8)
#: A few larger photos (one up to 1080p, two with several faces) beside the 250x250 LFW crops.
DEFAULT_PEOPLE: Final = (
    "obama.jpg",
    "biden.jpg",
    "obama-1080p.jpg",
    "two_people.jpg",
    "knn_test__obama_and_biden.jpg",
)
DEFAULT_LFW_SAMPLE: Final = 50
_MAX_PIXELS: Final = 40_000_000


@dataclass(frozen=True)
class MatcherBench:
    pack: str
    models_dir: Path
    images: Sequence[Path]
    iterations: int = 5
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    latency_threads: int = 0
    sweep_threads: int = 1
    floor: bool = True
    #: The embedder's precision (FACEPROOF_EMBEDDER_PRECISION; faces.runtime.Precision).
    embedder_precision: Precision = "f32"


def default_images(data_dir: Path, *, lfw_sample: int = DEFAULT_LFW_SAMPLE) -> list[Path]:
    """A fixed sample: ``lfw_sample`` LFW dev-test images spread over the sorted list, then people/."""
    lfw = list_images(data_dir / "faces" / "lfw-devtest")
    people = [data_dir / "faces" / "people" / name for name in DEFAULT_PEOPLE]
    return evenly(lfw, lfw_sample) + [path for path in people if path.is_file()]


def _sweep(
    analyze: Callable[[Image], list[Any]], images: Sequence[Image], rounds: int, workers: int
) -> dict[str, float]:
    tasks = [image for _ in range(rounds) for image in images]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench") as pool:
        list(pool.map(analyze, tasks[:workers]))  # start the threads, touch the sessions from each
        started, cpu_started = time.perf_counter(), time.process_time()
        faces = sum(len(result) for result in pool.map(analyze, tasks))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "faces_per_s": rate(faces, elapsed),
        "images_per_s": rate(len(tasks), elapsed),
        "cores_used": round(cpu / elapsed, 2) if elapsed > 0 else 0.0,
        "faces_per_cpu_s": rate(faces, cpu),
    }


def _stage_floor(cpu_s: Sequence[float], flops: Sequence[int], gflops: float) -> dict[str, float]:
    """CPU ms per call against FLOPs / one core's GEMM rate; ratio = measured / floor (means)."""
    measured = 1000.0 * float(np.mean(cpu_s))
    floor_ms = 1000.0 * float(np.mean(flops)) / (gflops * 1e9)
    return {
        "cpu_ms_p50": round(1000.0 * float(np.median(cpu_s)), 3),
        "cpu_ms_mean": round(measured, 3),
        "gflop_mean": round(float(np.mean(flops)) / 1e9, 4),
        "floor_ms": round(floor_ms, 3),
        "ratio_to_floor": round(measured / floor_ms, 2) if floor_ms > 0 else 0.0,
    }


def _floor(config: MatcherBench, decoded: Sequence[Image]) -> dict[str, Any]:
    """Detection and embedding on one intra-op thread, in thread CPU time, against this CPU's floor.

    The floor of a call is its model's FLOPs (Conv/Gemm/MatMul only) at the input it ran on,
    over the fp32 GEMM rate one onnxruntime thread reaches here (both measured in this run). CPU
    time of the calling thread (which is where one intra-op thread runs) includes the stage's
    pre- and post-processing in Python; the other jobs on a shared machine barely move it.
    """
    from faceproof.bench.floor import model_flops, one_core_gflops
    from faces.alignment import align_face
    from faces.detection import ScrfdDetector, YunetDetector, first_input_shape
    from faces.embedding import OnnxEmbedder
    from faces.packs import load_pack

    gflops = one_core_gflops()
    # fp32 whatever the service runs: the floor is fp32 FLOPs at the fp32 GEMM rate
    pipeline = load_pack(config.pack, config.models_dir, threads=1, embedder_precision="f32")
    pipeline.warm_up()
    detector, embedder = pipeline.detector, pipeline.embedder
    if not isinstance(detector, ScrfdDetector | YunetDetector) or not isinstance(embedder, OnnxEmbedder):
        raise BenchError("the floor needs the built-in ONNX detector and embedder")
    for image in decoded:
        pipeline.analyze(image)
    embed_shape = tuple(d if isinstance(d, int) else 1 for d in embedder.model.input_shape)
    detect_cpu: list[float] = []
    detect_flops: list[int] = []
    embed_cpu: list[float] = []
    for _ in range(config.iterations):
        for image in decoded:
            shape = first_input_shape(
                *image.shape[:2], size=detector.input_size, floor=detector.min_input, free=detector.free_size
            )
            started = time.thread_time()
            detections = detector.detect(image)
            detect_cpu.append(time.thread_time() - started)
            detect_flops.append(model_flops(detector.model.path, (1, 3, *shape)))
            for detection in detections:
                crop = align_face(image, detection.keypoints)
                started = time.thread_time()
                embedder.embed([crop])
                embed_cpu.append(time.thread_time() - started)
    embed_flops = model_flops(embedder.model.path, embed_shape)
    return {
        "one_core_gemm_gflops": round(gflops, 1),
        "note": "thread CPU ms per call, 1 intra-op thread, fp32; floor = FLOPs / one-core fp32 GEMM rate",
        "detect": _stage_floor(detect_cpu, detect_flops, gflops),
        "embed": _stage_floor(embed_cpu, [embed_flops] * len(embed_cpu), gflops),
    }


def run_matcher_bench(config: MatcherBench) -> dict[str, Any]:
    from faces.alignment import align_face
    from faces.images import decode_image
    from faces.packs import load_pack

    if config.iterations < 1:
        raise BenchError("--iterations must be at least 1")
    if not config.images:
        raise BenchError("no images to run on")
    machine = machine_info()
    decode_s: list[float] = []
    decoded: list[Image] = []
    for path in config.images:
        data = path.read_bytes()
        started = time.perf_counter()
        decoded.append(decode_image(data, max_pixels=_MAX_PIXELS))
        decode_s.append(time.perf_counter() - started)

    floor = _floor(config, decoded) if config.floor else None
    pipeline = load_pack(
        config.pack,
        config.models_dir,
        threads=config.latency_threads,
        embedder_precision=config.embedder_precision,
    )
    pipeline.warm_up()
    for image in decoded:  # warm-up pass: caches, allocator, lazy kernels for each input size
        pipeline.analyze(image)

    detect_s: list[float] = []
    align_s: list[float] = []
    embed_s: list[float] = []
    faces_found = 0
    for _ in range(config.iterations):
        for image in decoded:
            started = time.perf_counter()
            detections = pipeline.detector.detect(image)
            detect_s.append(time.perf_counter() - started)
            for detection in detections:
                started = time.perf_counter()
                crop = align_face(image, detection.keypoints)
                aligned = time.perf_counter()
                pipeline.embedder.embed([crop])
                align_s.append(aligned - started)
                embed_s.append(time.perf_counter() - aligned)
            faces_found += len(detections)
    if not embed_s:
        raise BenchError("no face was found in any image; nothing to align or embed")

    throughput: dict[str, dict[str, dict[str, float]]] = {}
    for threads in dict.fromkeys((config.sweep_threads, config.latency_threads)):
        swept = (
            pipeline
            if threads == config.latency_threads
            else load_pack(
                config.pack, config.models_dir, threads=threads, embedder_precision=config.embedder_precision
            )
        )
        swept.warm_up()
        throughput[str(threads)] = {
            str(workers): _sweep(swept.analyze, decoded, config.iterations, workers)
            for workers in config.concurrency
        }
    sweep = throughput[str(config.sweep_threads)]
    return {
        "pack": pipeline.info.pack,
        "models": [model.file for model in pipeline.info.models],
        "providers": list(pipeline.info.providers),
        "machine": machine,
        "load_average_after": machine_info()["load_average"],
        "images": len(decoded),
        "faces_per_round": faces_found // config.iterations,
        "iterations": config.iterations,
        "threads": {
            "latency": config.latency_threads,
            "faces_per_s": config.sweep_threads,
            "note": "0 = onnxruntime default (a thread per core); the sweep's threads share one pipeline",
        },
        "decode_ms": ms_summary(decode_s),
        "detect_ms": ms_summary(detect_s),
        "align_ms": ms_summary(align_s),
        "embed_ms": ms_summary(embed_s),
        "faces_per_s": {workers: result["faces_per_s"] for workers, result in sweep.items()},
        "images_per_s": {workers: result["images_per_s"] for workers, result in sweep.items()},
        "cores_used": {workers: result["cores_used"] for workers, result in sweep.items()},
        "faces_per_cpu_s": {workers: result["faces_per_cpu_s"] for workers, result in sweep.items()},
        "floor": floor,
        "faces_per_s_by_intra_op_threads": {
            threads: {workers: result["faces_per_s"] for workers, result in by_workers.items()}
            for threads, by_workers in throughput.items()
        },
    }
