"""The same frames get the same verdict in the scripted subject's rehearsal and in the worker's
session step (issue 15), on real recordings and the real models.

The subject rehearses its material (each frame detected, tracked and held, every detection phase,
the engine's thresholds and 10 % stricter ones) and plays a start only when the rehearsal passes
it. The session here is the liveness worker's: the frames JPEG-compressed, analysed by its
:class:`~services.liveness.frames.FrameProcessor` (detector on every 5th sequence, tracking in
between, so a frame's measures depend on the frames before it: a head pose differs by up to 4-5
degrees, a mouth ratio by 0.1 between a detected and a tracked crop of the same picture), the
analysis stored and read back as JSON, one :func:`~services.liveness.replay.replay_step` per frame
with the pre-checks, the progress stored and read back, and each frame saying which challenge the
subject had on screen (``FrameCaptured.shown``).

Two rejections of the cooperating evaluation were this disagreement:

* ``liveportrait_d11``, BLINK after OPEN_MOUTH: the rehearsal passed the blink from 5.6 s on
  every judgement; in the session one tracked frame of the reopening eyes read 10.6 degrees of
  pitch from the baseline (the rehearsal's frames: under 9), and the engine dropped the blink in
  progress (TIMEOUT). An unsteady frame between closing and reopening is now skipped, not a reset.
* ``liveportrait_d12``, OPEN_MOUTH after TURN_LEFT: the annotated segment's first frame (the
  baseline) shows the mouth half open (MAR 0.42), so its later opening to 0.62 was 0.2 above it
  on one frame only (TIMEOUT). The opening is now measured from the most closed mouth since the
  challenge began (baseline or later), and the lips' deformation too.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Sequence

import cv2
import numpy as np
import pytest

from contracts.values import ChallengeType
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.scripted_subject import JPEG_QUALITY, WORKER_FPS, Image, Media, ScriptedSubject
from services.liveness.analysis import DEFAULT_DETECT_EVERY, FrameAnalysis
from services.liveness.challenges import DEFAULT_THRESHOLDS, Challenge, ChallengeStatus
from services.liveness.frames import FrameProcessor
from services.liveness.progress import ReplayProgress
from services.liveness.readiness import DEFAULT_READINESS
from services.liveness.replay import ReplayFrame, ReplayResult, replay_step
from services.liveness.session_models import SessionModels
from tests.paths import DATA_DIR, MODELS_DIR

VIDEOS = DATA_DIR / "video"


@functools.cache
def models() -> SessionModels:
    return SessionModels.load(MODELS_DIR, threads=2)


@functools.cache
def subject(name: str) -> ScriptedSubject:
    media = Media.from_path(VIDEOS / name)
    return ScriptedSubject(media, models().analyzer, segments=load_video_segments())


def worker_session(
    player: ScriptedSubject, challenges: Sequence[Challenge], *, lead_in: int = 0
) -> ReplayResult:
    """``player`` answers ``challenges`` in a session judged as the liveness worker judges it;
    the first ``lead_in`` frames are black (a camera starting), which moves every later frame to
    another phase of the worker's detection rhythm."""
    return asyncio.run(_worker_session(player, challenges, lead_in))


async def _worker_session(
    player: ScriptedSubject, challenges: Sequence[Challenge], lead_in: int
) -> ReplayResult:
    player.prepare(challenges)
    m = models()
    processor = FrameProcessor(m.analyzer, m.embedder, concurrency=1)
    progress = ReplayProgress()
    shown = -1
    player.instruct(0)  # before challenge 0 is issued the subject shows its first frame (held)
    limit = lead_in + round((len(challenges) * DEFAULT_THRESHOLDS.time_limit_s + 4.0) * WORKER_FPS)
    try:
        for sequence in range(limit):
            picture = player.next_frame() if sequence >= lead_in else np.zeros_like(player.media.frames[0])
            jpeg = _jpeg(picture)  # the call agent stores a JPEG
            analysed = await processor.analyse("session", sequence, jpeg)
            frame = ReplayFrame(
                sequence=sequence,
                t=sequence / WORKER_FPS,
                analysis=FrameAnalysis.from_dict(analysed.analysis.to_dict()),  # stored, read back
                spoof_score=analysed.spoof_score,
                embedding=None if analysed.embedding is None else np.asarray(analysed.embedding, np.float32),
                shown=shown,
            )
            result = replay_step(
                challenges,
                progress,
                [frame],
                identity_threshold=m.identity_threshold,
                readiness=DEFAULT_READINESS,
            )
            if result.done:
                return result
            progress = ReplayProgress.model_validate_json(result.progress.model_dump_json())
            if len(result.issued) - 1 > shown:  # ChallengeIssued reaches the agent, which shows it
                shown = len(result.issued) - 1
                player.instruct(shown)
    finally:
        processor.close()
    raise AssertionError(f"no decision within {limit} frames")


def _jpeg(image: Image) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return bytes(data)


def rehearsed_passing(player: ScriptedSubject, index: int) -> bool:
    """Whether every candidate played for challenge ``index`` was one the rehearsal (or the
    annotation, which judged the same way) passes."""
    played = player.played[index]
    return bool(played) and all(
        source.startswith("annotated") or re.search(r"passes 100% of judgements", source) for source in played
    )


@pytest.mark.parametrize("lead_in", range(DEFAULT_DETECT_EVERY))
def test_a_blink_the_rehearsal_passes_passes_in_the_session(lead_in: int) -> None:
    player = subject("liveportrait_d11.mp4")
    challenges = [Challenge(ChallengeType.OPEN_MOUTH), Challenge(ChallengeType.BLINK)]
    blink = player.search(challenges[1])[0]
    assert blink.robust  # the rehearsal passes it on every detection phase, with stricter thresholds
    result = worker_session(player, challenges, lead_in=lead_in)
    assert [v.status for v in result.verdicts] == [ChallengeStatus.PASSED, ChallengeStatus.PASSED], (
        result.verdicts,
        player.played,
    )
    assert rehearsed_passing(player, 1)
    assert result.decision is not None and result.decision.is_live


def test_an_open_mouth_from_a_half_open_baseline_passes_in_the_session() -> None:
    player = subject("liveportrait_d12.mp4")
    challenges = [Challenge(ChallengeType.TURN_LEFT), Challenge(ChallengeType.OPEN_MOUTH)]
    result = worker_session(player, challenges)
    assert [v.status for v in result.verdicts] == [ChallengeStatus.PASSED, ChallengeStatus.PASSED], (
        result.verdicts,
        player.played,
    )
    # the first annotated segment answers it: its first frame, the baseline, has the mouth half open
    assert player.played[1] == ["annotated 3.8-5.3 s"]
    assert rehearsed_passing(player, 1)
