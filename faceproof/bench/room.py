"""`faceproof bench room`: a video call through a real mediasoup room, measured end to end.

A stack of its own (gateway, call agent, liveness worker, one matcher; temporary SQLite and object
store, a RabbitMQ virtual host of its own), the room server of tests/support/sfu (mediasoup 3.8.4,
built once by scripts/mediasoup.sh) and, per repeat, one flow: ``POST /v1/calls`` into a new room,
then a pymediasoup subject playing a real face video (the scripted subject) joins it. The subject
answers each ChallengeIssued once the call agent's video shows it (a FrameCaptured whose ``shown``
reaches the challenge), as a person reacts to the picture: reacting to the event itself, it
raced the agent under load and moved before the frames that make the challenge's baseline. Per
repeat:

* ``stored_fps``: frames per second the call agent took from the subject's video and handed on
  (FrameCaptured, sampled at most at ``FACEPROOF_FRAME_RATE``), from the first to the decision;
* ``analysed_fps``: frames per second the liveness worker analysed over the same time;
* ``decision_ms``: from the moment the subject's track handed out the frame that completed the
  last challenge to the moment LivenessDecided reached the broker's consumer. The subject writes
  a frame counter into the top-left corner of every frame it sends; the frame that passed the last
  challenge is found by replaying the worker's stored frames (the same engine) and its counter is
  read back from the JPEG the agent stored. Every clock is this machine's.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import cv2
import httpx
import numpy as np
import numpy.typing as npt

from faceproof.bench.environment import BenchError, machine_info
from faceproof.bench.liveness_flow import listening, replay_stored
from faceproof.bench.stack import Stack, StackConfig, running_stack
from faceproof.testing.annotate import load_video_segments
from faceproof.testing.mediasoup_room import MediasoupRoom, RoomSubject, room_server_ready, run_bounded
from faceproof.testing.scripted_subject import Media, ScriptedSubject
from faceproof.testing.webrtc_subject import OnScreen, ScriptedSource, SourceTrack
from faces.packs import get_pack
from infra.db.engine import create_engine, session_factory
from infra.db.liveness import LivenessRepository
from infra.safe_fetch import FetchPolicy
from services.liveness.analysis import FrameAnalyzer

__all__ = ["RoomBench", "read_stamp", "run_room_bench", "stamp"]

Image = npt.NDArray[np.uint8]
Warn = Callable[[str], None]

#: The frame counter's cells: 16 bits in the top row, their complements below (a check).
STAMP_BITS: Final = 16
STAMP_CELL: Final = 16
#: What the subject's video (liveportrait_d3's annotated segments) answers from a neutral pose.
ANSWERABLE: Final = ["LOOK_DOWN", "OPEN_MOUTH"]
_LOOPBACK: Final = FetchPolicy.create("127.0.0.1")


def stamp(image: Image, counter: int) -> Image:
    """``image`` with ``counter`` written as black and white cells in its top-left corner."""
    out = image.copy()
    for bit in range(STAMP_BITS):
        value = 255 if counter >> bit & 1 else 0
        x = bit * STAMP_CELL
        out[:STAMP_CELL, x : x + STAMP_CELL] = value
        out[STAMP_CELL : 2 * STAMP_CELL, x : x + STAMP_CELL] = 255 - value
    return out


def read_stamp(image: Image, scale: float) -> int | None:
    """The counter :func:`stamp` wrote, in an image scaled by ``scale``; None when unreadable."""
    gray = image.mean(axis=2) if image.ndim == 3 else image
    cell = STAMP_CELL * scale
    counter = 0
    for bit in range(STAMP_BITS):
        x0, x1 = int((bit + 0.25) * cell), int((bit + 0.75) * cell)
        top = float(gray[int(0.25 * cell) : int(0.75 * cell), x0:x1].mean())
        bottom = float(gray[int(1.25 * cell) : int(1.75 * cell), x0:x1].mean())
        if abs(top - bottom) < 64:
            return None
        counter |= (top > bottom) << bit
    return counter


@dataclass
class StampedSource:
    """The scripted subject's frames, each stamped with its counter; remembers when each left."""

    source: ScriptedSource
    sent_at: dict[int, float] = field(default_factory=dict)
    _count: int = 0

    def instruct(self, message: dict[str, Any]) -> None:
        self.source.instruct(message)

    def next_frame(self) -> Image:
        counter = self._count % (1 << STAMP_BITS)
        self._count += 1
        self.sent_at[counter] = time.time()
        return stamp(self.source.next_frame(), counter)


@dataclass(frozen=True)
class RoomBench:
    models_dir: Path
    broker_url: str
    video: Path
    repeats: int = 3
    pack: str | None = None
    timeout_s: float = 180.0


@dataclass
class _Flow:
    session_id: str = ""
    frames: list[float] = field(default_factory=list)
    decided_at: float | None = None
    decided: dict[str, Any] | None = None


def run_room_bench(bench: RoomBench, warn: Warn) -> dict[str, Any]:
    """Start the stack and the room, run ``repeats`` flows one after the other, summarise."""
    error = room_server_ready()
    if error is not None:
        raise BenchError(f"the mediasoup room server could not be built: {error[-800:]}")
    config = StackConfig(
        workers=1,
        models_dir=bench.models_dir,
        broker_url=bench.broker_url,
        pack=bench.pack,
        other_workers=("call-agent", "liveness"),
        extra_env={"FACEPROOF_FETCH_ALLOW_HOSTS": "127.0.0.1"},
    )
    machine = machine_info()
    media = Media.from_path(bench.video)
    analyzer = FrameAnalyzer.from_models_dir(bench.models_dir, threads=1)
    threshold = get_pack(bench.pack or "permissive").cosine_threshold
    runs: list[dict[str, Any]] = []
    with running_stack(config, warn) as stack:
        for repeat in range(bench.repeats):
            source = ScriptedSource(ScriptedSubject(media, analyzer, segments=load_video_segments()))
            runs.append(run_bounded(_one(stack, bench, StampedSource(source), media, threshold, repeat)))
    return {
        "machine": machine,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "repeats": runs,
        "summary": _summary(runs),
    }


async def _one(
    stack: Stack, bench: RoomBench, subject: StampedSource, media: Media, threshold: float, repeat: int
) -> dict[str, Any]:
    flow = _Flow()
    on_screen = OnScreen(subject)
    keys = ("challenge.issued", "frame.captured", "liveness.decided")
    async with MediasoupRoom() as room, listening(stack.vhost.url, keys, partial(_on_event, flow, on_screen)):
        room_id = f"bench-{repeat}"
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {stack.token}"}
        ) as http:
            answer = await http.post(
                "/v1/calls",
                json={
                    "ws_url": room.url(room_id, "faceproof"),
                    "callback_base_url": "http://127.0.0.1:9/",
                    "token": f"bench-{repeat}",
                    "settings": {"challenges": 2, "challengeTypes": ANSWERABLE},
                },
                timeout=30,
            )
        if answer.status_code != 202:
            raise BenchError(f"POST /v1/calls answered {answer.status_code}: {answer.text[:300]}")
        flow.session_id = answer.json()["sessionId"]
        person = RoomSubject(SourceTrack(subject), policy=_LOOPBACK)
        try:
            await room.wait_for(lambda: bool(room.of("produced", roomId=room_id, peerId="faceproof")), 60)
            await person.join(room.url(room_id, "subject"))
            async with asyncio.timeout(bench.timeout_s):
                while flow.decided_at is None:  # noqa: ASYNC110 - the event consumer sets it
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise BenchError(f"no decision within {bench.timeout_s:g} s; logs:\n{stack.log_tail()}") from None
        finally:
            await person.leave()
    return await _measure(stack, flow, subject, media, threshold)


def _on_event(flow: _Flow, subject: OnScreen, key: str, body: dict[str, Any]) -> None:
    if not flow.session_id or body.get("session_id") != flow.session_id:
        return
    if key == "challenge.issued":
        subject.instruct(body)  # answered once the agent's video shows it
    elif key == "frame.captured":
        flow.frames.append(time.time())
        subject.seen(body.get("shown"))
    elif key == "liveness.decided" and flow.decided_at is None:
        flow.decided_at, flow.decided = time.time(), body


async def _measure(
    stack: Stack, flow: _Flow, subject: StampedSource, media: Media, threshold: float
) -> dict[str, Any]:
    assert flow.decided_at is not None and flow.decided is not None
    root = stack.logs.parent / "data"
    engine = create_engine(stack.database_url)
    try:
        replayed = await replay_stored(
            LivenessRepository(session_factory(engine)), flow.session_id, identity_threshold=threshold
        )
    finally:
        await engine.dispose()
    if replayed is None or not flow.frames:
        raise BenchError("the session left no liveness state or frames")
    span = max(flow.decided_at - flow.frames[0], 1e-6)
    row: dict[str, Any] = {
        "is_live": bool(flow.decided["is_live"]),
        "reasons": list(flow.decided.get("reasons") or []),
        "stored_fps": round(len(flow.frames) / span, 2),
        "analysed_fps": round(replayed.stored / span, 2),
        "decision_ms": None,
    }
    passing = replayed.deciding
    if passing is None:
        return row
    image = cv2.imread(str(root / "objects" / passing.storage_key), cv2.IMREAD_COLOR)
    scale = passing.analysis.width / media.frame(0).shape[1]
    counter = None if image is None else read_stamp(np.asarray(image, dtype=np.uint8), scale)
    if counter is not None and counter in subject.sent_at:
        row["decision_ms"] = round((flow.decided_at - subject.sent_at[counter]) * 1000, 1)
    return row


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(key: str) -> dict[str, float] | None:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        if not values:
            return None
        return {
            "median": round(statistics.median(values), 1),
            "min": round(min(values), 1),
            "max": round(max(values), 1),
            "n": len(values),
        }

    return {
        "live": sum(1 for r in runs if r["is_live"]),
        "stored_fps": spread("stored_fps"),
        "analysed_fps": spread("analysed_fps"),
        "decision_ms": spread("decision_ms"),
    }
