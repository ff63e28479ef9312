"""`faceproof eval verify` as a user runs it: a real subprocess on a small slice of LFW dev-test."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.paths import DATA_DIR, MODELS_DIR

pytestmark = pytest.mark.e2e

LFW = DATA_DIR / "faces" / "lfw-devtest"
NO_FACE_PHOTO = DATA_DIR / "faces" / "negative" / "bulk__view.jpg"
REQUIRED_KEYS = {
    "pairs",
    "accuracy",
    "accuracy_std",
    "threshold",
    "tar_at_far_1e-2",
    "tar_at_far_1e-3",
    "eer",
    "auc",
    "no_face",
}


def lfw_rows() -> list[dict[str, str]]:
    with (LFW / "pairs.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_pairs(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["fold", "file_a", "file_b", "same"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_verify(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # pack and models directory come from the settings, as for the service
    env = {**os.environ, "FACEPROOF_MODEL_PACK": "permissive", "FACEPROOF_MODELS_DIR": str(MODELS_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "faceproof", "eval", "verify", "--threads", "2", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def one_json_object(stdout: str) -> dict[str, Any]:
    report = json.loads(stdout)  # raises if anything else is printed on stdout
    assert isinstance(report, dict)
    assert report.keys() >= REQUIRED_KEYS
    return report


def test_verify_a_slice_of_lfw(tmp_path: Path) -> None:
    rows = lfw_rows()
    same = [row for row in rows if row["same"] == "1"][::25]
    different = [row for row in rows if row["same"] == "0"][::25]
    pairs = write_pairs(tmp_path / "pairs.csv", same + different)
    out = tmp_path / "out"
    done = run_verify(tmp_path, "--pairs", str(pairs), "--images", str(LFW), "--json", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr  # the progress bar goes to stderr, stdout stays one JSON object
    report = one_json_object(done.stdout)
    assert report["pairs"] == 40
    assert report["pack"] == "permissive"
    assert report["accuracy"] > 0.9
    assert report["auc"] > 0.95
    assert report["no_face"] == 0
    assert 0.0 <= report["eer"] < 0.1
    assert 0.0 <= report["tar_at_far_1e-3"] <= report["tar_at_far_1e-2"] <= 1.0
    assert -1.0 <= report["threshold"] <= 1.0
    # per-pair scores: one row per pair, and the decisions are the ones the accuracy counts
    with (out / "pairs.csv").open(newline="", encoding="utf-8") as handle:
        scored = list(csv.DictReader(handle))
    assert list(scored[0]) == ["file_a", "file_b", "same", "fold", "cosine", "similarity", "decision"]
    assert len(scored) == 40
    correct = sum((row["decision"] == "match") == (row["same"] == "1") for row in scored)
    assert correct / 40 == pytest.approx(report["accuracy"])
    for plot in ("roc.png", "scores.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_image_without_a_face_is_an_error_not_dropped(tmp_path: Path) -> None:
    images = tmp_path / "images"
    same = [row for row in lfw_rows() if row["same"] == "1"][:3]
    different = [row for row in lfw_rows() if row["same"] == "0"][:3]
    for row in same + different:
        for key in ("file_a", "file_b"):
            (images / row[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(LFW / row[key], images / row[key])
    shutil.copy(NO_FACE_PHOTO, images / "landscape.jpg")
    # the "same person" pair whose second photo has no face must count as a false reject
    broken = {"fold": "1", "file_a": same[0]["file_a"], "file_b": "landscape.jpg", "same": "1"}
    pairs = write_pairs(tmp_path / "pairs.csv", [*same, *different, broken])
    out = tmp_path / "out"
    done = run_verify(tmp_path, "--pairs", str(pairs), "--images", str(images), "--json", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = one_json_object(done.stdout)
    assert report["pairs"] == 7
    assert report["no_face"] == 1
    assert report["no_face_images"] == ["landscape.jpg"]
    assert report["accuracy"] <= 6 / 7 + 1e-9
    with (out / "pairs.csv").open(newline="", encoding="utf-8") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert (last["file_b"], last["decision"], float(last["cosine"])) == ("landscape.jpg", "no_face", -1.0)


def test_human_output_and_errors(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", [row for row in lfw_rows() if row["same"] == "1"][:1])
    done = run_verify(tmp_path, "--pairs", str(pairs), "--images", str(LFW), "--pack", "no-such-pack")
    assert done.returncode == 1
    assert "unknown model pack 'no-such-pack'" in done.stderr
    rows = lfw_rows()
    pairs = write_pairs(tmp_path / "pairs.csv", [rows[0], rows[1], rows[-1], rows[-2]])
    done = run_verify(tmp_path, "--pairs", str(pairs), "--images", str(LFW))
    assert done.returncode == 0, done.stderr
    for label in ("accuracy", "TAR @ FAR 1e-3", "EER", "ROC AUC", "images without a face"):
        assert label in done.stdout
