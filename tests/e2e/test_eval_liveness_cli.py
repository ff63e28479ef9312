"""`faceproof eval liveness` as a user runs it: a real subprocess on a two-row manifest.

One short live video with an annotated blink (liveportrait_d0, 3 s) and one printed photo played
as a static video; one BLINK challenge each, so the run stays well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import DATA_DIR, MODELS_DIR

pytestmark = pytest.mark.e2e

LIVE = DATA_DIR / "video" / "liveportrait_d0.mp4"
PRINT = DATA_DIR / "antispoof" / "image_F2.jpg"


def test_a_print_attack_is_caught_and_a_live_blink_passes(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    # paths relative to the manifest's folder, run from somewhere else
    rows = [
        (os.path.relpath(LIVE, folder), "live", ""),
        (os.path.relpath(PRINT, folder), "attack", "print"),
    ]
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "video,label,attack_type\n" + "".join(f"{v},{label},{kind}\n" for v, label, kind in rows),
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "faceproof",
            "eval",
            "liveness",
            "--manifest",
            str(manifest),
            "--json",
            "--challenges",
            "1",
            "--types",
            "blink",
            "--models-dir",
            str(MODELS_DIR),
            "--threads",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is one JSON object; progress goes to stderr
    assert {"videos", "bpcer", "apcer", "decisions"} <= report.keys()
    assert report["videos"] == 2 and report["types"] == ["BLINK"]
    live, attack = report["decisions"]
    for decision in (live, attack):
        assert {"video", "label", "isLive", "confidence", "reasons"} <= decision.keys()
        assert 0 <= decision["confidence"] <= 100
        assert decision["isLive"] == (decision["confidence"] >= 50)
    assert live["video"] == rows[0][0] and live["label"] == "live"
    assert attack["label"] == "attack" and attack["attack_type"] == "print"
    # a photo cannot blink, and the anti-spoofing models see the print
    assert attack["isLive"] is False
    assert "TIMEOUT" in attack["reasons"] and "SPOOF_SUSPECTED" in attack["reasons"]
    assert report["apcer"] == {"print": 0.0}
    # the annotated blink of the live video answers the challenge
    assert live["isLive"] is True, live
    assert live["challenges"][0]["played"][0].startswith("annotated")
    assert report["bpcer"] == 0.0
    assert "manifest.csv" not in done.stdout and "liveportrait_d0.mp4: live" in done.stderr
