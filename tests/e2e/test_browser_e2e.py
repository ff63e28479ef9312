"""The hosted page in a real browser: Debian's Chromium, driven by Playwright, its camera fed from
a y4m file made from a real face video. The page must reach its result screen, and the session's
status over the API must say the same."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from services.call_agent.catalog import load_catalog
from tests.e2e.conftest import Stack
from tests.paths import DATA_DIR

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
FPS = 15
#: The recording never turns its head that far (docs/liveness.md), so it cannot pass by chance.
TURNS = ["TURN_LEFT", "TURN_RIGHT"]


def write_y4m(media_path: Path, out: Path, *, seconds: float = 6.0) -> Path:
    """A 640x480 4:2:0 y4m of the video's first ``seconds`` (Chromium loops it as the camera)."""
    capture = cv2.VideoCapture(str(media_path))
    with out.open("wb") as y4m:
        y4m.write(f"YUV4MPEG2 W640 H480 F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        source_fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        step = source_fps / FPS
        wanted, index = 0.0, 0
        while index < seconds * source_fps:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= wanted:
                wanted += step
                frame = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)
                y4m.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
            index += 1
    capture.release()
    return out


def test_the_hosted_page_runs_a_session_in_chromium(stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), (
        "Debian's chromium is missing: scripts/test installs it (apt-get install chromium)"
    )

    camera = write_y4m(DATA_DIR / "video" / "lestari15_real.mp4", tmp_path / "camera.y4m")
    with stack.client() as client:
        created = client.post(
            "/v1/sessions", json={"settings": {"challenges": 2, "challengeTypes": TURNS}}
        ).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}",
            ],
        )
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(created["clientUrl"])
            page.wait_for_selector("#result[data-status]", timeout=90_000)
            shown = page.get_attribute("#result", "data-status")
            instruction = page.text_content("#instruction") or ""
            reason = page.text_content("#reason") if page.query_selector("#reason") else None
        finally:
            browser.close()  # Playwright gave it a fresh, temporary profile
    with stack.client() as client:
        status = client.get(f"/v1/sessions/{created['sessionId']}").json()
    assert shown in {"SUCCEEDED", "FAILED", "EXPIRED"}, console
    assert status["status"] == shown, (status, console)
    # the camera file ignores the instructions: a live person who does not follow them fails
    assert shown == "FAILED" and "TIMEOUT" in status["reasons"], (status, console)
    assert instruction, "the page never showed an instruction"
    # and tells the user why, in the session's language (English here)
    assert reason == load_catalog("en").reason(status["reasons"][0]) and reason, (reason, status)
