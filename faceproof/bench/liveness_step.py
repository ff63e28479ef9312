"""`faceproof bench liveness-step`: what the liveness worker's step costs per frame, by session length.

The step is :func:`services.liveness.handlers.handle_frame` as the worker runs it for one
FrameCaptured event: the session and state reads, the frame's JPEG read from the object store,
the frame stored, and the challenge engine advanced. The face analysis itself is left out (its
cost does not depend on the session and ``faceproof.bench.liveness_stages`` times it): real
frames of a video in ``../shared/data/video`` are analysed once beforehand by the worker's
:class:`~services.liveness.frames.FrameProcessor`, and the step gets that analysis back.

Sessions of N frames each (10, 50 and 200 by default), ``repeats`` sessions per N (the sizes
taking turns: 10, 50, 200, 10, 50, 200, ...), on a real
database (a fresh SQLite file by default; ``--database-url`` for PostgreSQL, migrated by the
bench) and a local object store. The challenges never end (thresholds no movement reaches, a
time limit of an hour), so every frame of every session goes through the engine. Per N: the mean
milliseconds per frame of each session, wall clock and this process's CPU time (median and min-max
over the repeats), and the same for the session's last 10 steps. A flat step gives the same
numbers for every N; the CPU figures (the worker's own work, not the database server's) move less
with the machine's load than the wall-clock ones.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import cv2

from contracts.documents import SessionSettingsDocument, StoredChallenge
from contracts.events import FrameCaptured
from contracts.values import ChallengeType
from faceproof.bench.environment import BenchError, machine_info
from faceproof.bench.liveness_stages import letterbox_to
from faceproof.testing.annotate import read_frames
from infra.db.engine import create_engine, session_factory
from infra.db.liveness import LivenessRepository
from infra.db.migrate import upgrade_async
from infra.db.repositories import SessionRepository
from infra.storage import ObjectStore, open_store
from services.liveness.challenges import Challenge, Thresholds
from services.liveness.frames import AnalysedFrame, FrameProcessor
from services.liveness.handlers import Deps, handle_frame
from services.liveness.session_models import SessionModels

__all__ = ["StepBench", "run_step_bench"]

FPS: Final = 8.0
WIDTH: Final = 640
HEIGHT: Final = 480
LAST_STEPS: Final = 10
#: No movement reaches these and no gate or clock ends the challenge: every frame is judged.
NEVER_DECIDED: Final = Thresholds(
    time_limit_s=3600.0,
    gate_tolerance_s=3600.0,
    gate_min_frames=1_000_000,
    turn_min_delta_deg=1000.0,
    turn_min_abs_deg=1000.0,
)
CHALLENGES: Final = (Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.TURN_RIGHT))


@dataclass(frozen=True)
class StepBench:
    models_dir: Path
    video: Path
    sizes: tuple[int, ...] = (10, 50, 200)
    repeats: int = 3
    #: None: a fresh SQLite database in a temporary directory.
    database_url: str | None = None
    threads: int = 2


class _Analysed:
    """The frame-source port: the analysis made beforehand for each sequence."""

    def __init__(self, analyses: Sequence[AnalysedFrame]) -> None:
        self._analyses = analyses

    async def analyse(
        self, session_id: str, sequence: int, jpeg: bytes, *, eyes: bool = True
    ) -> AnalysedFrame:
        return self._analyses[sequence]

    def forget(self, session_id: str) -> None:
        return None


def _jpegs(video: Path, count: int) -> list[bytes]:
    out: list[bytes] = []
    for _, frame in read_frames(video):
        ok, data = cv2.imencode(".jpg", letterbox_to(frame, WIDTH, HEIGHT), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise BenchError(f"cannot encode a frame of {video}")
        out.append(bytes(data))
        if len(out) == count:
            return out
    raise BenchError(f"{video} has {len(out)} frames; the bench needs {count}")


async def _analyse(bench: StepBench, jpegs: Sequence[bytes]) -> list[AnalysedFrame]:
    models = await asyncio.to_thread(SessionModels.load, bench.models_dir, threads=bench.threads)
    processor = FrameProcessor(models.analyzer, models.embedder, concurrency=1)
    try:
        return [await processor.analyse("bench", n, jpeg) for n, jpeg in enumerate(jpegs)]
    finally:
        processor.close()


async def _session(
    deps: Deps, store: ObjectStore, jpegs: Sequence[bytes], size: int
) -> list[tuple[float, float]]:
    """One session of ``size`` frames; the wall and the CPU seconds (this process) of each step."""
    record, _ = await deps.sessions.create(
        "bench",
        client_request_token=None,
        settings=SessionSettingsDocument(challenges=len(CHALLENGES)),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    started = datetime.now(UTC)
    await deps.states.create_state(
        record.id,
        challenges=[StoredChallenge(type=c.type, target=c.target) for c in CHALLENGES],
        started_at=started,
        connection_id="c1",
    )
    steps: list[tuple[float, float]] = []
    for sequence in range(size):
        key = f"sessions/{record.id}/frames/{sequence:08d}.jpg"
        await store.put(key, jpegs[sequence], "image/jpeg")
        event = FrameCaptured(
            correlation_id=record.id,
            session_id=record.id,
            connection_id="c1",
            sequence=sequence,
            storage_key=key,
            width=WIDTH,
            height=HEIGHT,
            captured_at=started + timedelta(seconds=sequence / FPS),
        )
        start, cpu = time.perf_counter(), time.process_time()
        await handle_frame(event, deps)
        steps.append((time.perf_counter() - start, time.process_time() - cpu))
    state = await deps.states.get(record.id)
    if state is None or state.decision is not None:
        raise BenchError("the bench's session ended early; its thresholds must keep it open")
    return steps


def _median_spread(name: str, values: Sequence[float]) -> dict[str, Any]:
    return {
        name: round(statistics.median(values), 3),
        f"{name}_min_max": [round(min(values), 3), round(max(values), 3)],
    }


def _summary(sessions: Sequence[Sequence[tuple[float, float]]]) -> dict[str, Any]:
    """Per session: mean wall and CPU ms per step, and the mean of its last steps; median, min-max."""
    wall = [statistics.fmean(w for w, _ in steps) * 1000.0 for steps in sessions]
    cpu = [statistics.fmean(c for _, c in steps) * 1000.0 for steps in sessions]
    last = [statistics.fmean(w for w, _ in steps[-LAST_STEPS:]) * 1000.0 for steps in sessions]
    last_cpu = [statistics.fmean(c for _, c in steps[-LAST_STEPS:]) * 1000.0 for steps in sessions]
    return {
        **_median_spread("ms_per_frame", wall),
        **_median_spread("cpu_ms_per_frame", cpu),
        **_median_spread("last_10_steps_ms", last),
        **_median_spread("last_10_steps_cpu_ms", last_cpu),
    }


async def _run(bench: StepBench) -> dict[str, Any]:
    jpegs = await asyncio.to_thread(_jpegs, bench.video, max(bench.sizes))
    analyses = await _analyse(bench, jpegs)
    with tempfile.TemporaryDirectory(prefix="faceproof-step-bench-") as tmp:
        url = bench.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        engine = create_engine(url)
        try:
            await upgrade_async(engine)
            factory = session_factory(engine)
            store = open_store(Path(tmp, "objects").as_uri())
            await store.ensure_buckets()
            deps = Deps(
                sessions=SessionRepository(factory),
                states=LivenessRepository(factory),
                store=store,
                frames=_Analysed(analyses),
                identity_threshold=-1.0,
                thresholds=NEVER_DECIDED,
            )
            await _session(deps, store, jpegs, min(bench.sizes))  # warm-up
            # the sizes take turns, so that a change in the machine's load hits each of them alike
            sessions: dict[int, list[list[tuple[float, float]]]] = {size: [] for size in bench.sizes}
            for _ in range(bench.repeats):
                for size in bench.sizes:
                    sessions[size].append(await _session(deps, store, jpegs, size))
            results = {str(size): _summary(runs) for size, runs in sessions.items()}
        finally:
            await engine.dispose()
    return results


def run_step_bench(bench: StepBench) -> dict[str, Any]:
    """Per session length N: ms per frame of the liveness step (median, min-max over the repeats)."""
    if not bench.sizes or min(bench.sizes) < 1 or bench.repeats < 1:
        raise BenchError("sizes and repeats must be positive")
    database = "sqlite" if bench.database_url is None else bench.database_url.split(":", 1)[0]
    by_size = asyncio.run(_run(bench))
    first, last = by_size[str(bench.sizes[0])], by_size[str(bench.sizes[-1])]
    return {
        "machine": machine_info(),
        "video": bench.video.name,
        "database": database,
        "repeats": bench.repeats,
        "frames": by_size,
        "ratio_last_to_first_size": round(last["ms_per_frame"] / max(first["ms_per_frame"], 1e-9), 2),
        "cpu_ratio_last_to_first_size": round(
            last["cpu_ms_per_frame"] / max(first["cpu_ms_per_frame"], 1e-9), 2
        ),
    }
