"""Erasure during a live call, end to end: the gateway, call agent and liveness worker as
processes, a subject streaming a real face video over real WebRTC (aiortc), SeaweedFS behind.

The app erases the session while the camera streams. The call agent must stop storing frames and
hang up, the liveness worker must write no reference or audit image, and once the call has ended
nothing of the session is left in the bucket (listed under its prefix)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import cv2
import httpx
import pytest

from faceproof.testing.scripted_subject import Media
from faceproof.testing.webrtc_subject import PlaybackSource, SessionRun, run_subject
from infra.retention import session_prefix
from infra.storage import open_store
from tests.e2e.conftest import TOKEN, Stack
from tests.paths import DATA_DIR

pytestmark = pytest.mark.e2e

VIDEO = DATA_DIR / "video" / "lestari15_real.mp4"


async def _erase_while_streaming(
    stack: Stack, media: Media
) -> tuple[str, dict[str, Any], SessionRun, list[str], float]:
    store = open_store(stack.env["FACEPROOF_STORAGE_URL"])
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ok, still = cv2.imencode(".jpg", media.frame(0))
    assert ok
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=60) as http:
        created = await http.post(
            "/v1/sessions",
            json={"settings": {"challenges": 2}, "reference": base64.b64encode(still.tobytes()).decode()},
        )
        assert created.status_code == 201, created.text
        session = created.json()
        prefix = session_prefix(session["sessionId"])
        subject = asyncio.create_task(
            run_subject(
                stack.url, session["sessionId"], session["clientToken"], PlaybackSource(media), timeout_s=90
            )
        )
        # the call is live: frames are being stored
        frames: list[str] = []
        deadline = time.monotonic() + 60
        while len(frames) < 5:
            assert not subject.done(), "the call ended before any frame was stored"
            assert time.monotonic() < deadline, "no frames were stored"
            await asyncio.sleep(0.3)
            frames = [k for k in await store.list(prefix) if "/frames/" in k]
        erased_at = time.monotonic()
        answer = await http.delete(f"/v1/sessions/{session['sessionId']}")
        assert answer.status_code == 204, answer.text
        run = await asyncio.wait_for(subject, 60)  # the call agent hangs up
        hung_up_after = time.monotonic() - erased_at
        status = (await http.get(f"/v1/sessions/{session['sessionId']}")).json()
    return prefix, status, run, frames, hung_up_after


def test_erasing_a_live_session_leaves_nothing_in_the_bucket(stack: Stack) -> None:
    media = Media.from_path(VIDEO, max_seconds=20)
    prefix, status, run, frames, hung_up_after = asyncio.run(_erase_while_streaming(stack, media))
    assert frames  # the camera's frames were stored while the call ran
    assert hung_up_after < 15, f"the call agent went on for {hung_up_after:.1f} s after the erasure"
    finished = run.finished
    assert finished is None or finished.get("status") == "FAILED"
    assert status["status"] == "FAILED" and status["reasons"] == ["ERASED"] and status["purged"] is True

    store = open_store(stack.env["FACEPROOF_STORAGE_URL"])
    assert asyncio.run(store.list(prefix)) == []  # the call has ended: no frame, reference or audit image
    time.sleep(3)  # nothing lands afterwards either (a frame in flight, a late liveness image)
    assert asyncio.run(store.list(prefix)) == []
