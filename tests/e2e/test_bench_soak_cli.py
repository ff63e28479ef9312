"""`faceproof bench soak` end to end, for seconds (a smoke run, not figures): its own stack, compares
at a steady rate and one liveness session, every request answered, RSS of every service reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from faceproof.bench.soak import send_times
from tests.paths import MODELS_DIR, REPO_ROOT

pytestmark = pytest.mark.e2e


def test_send_times_are_a_steady_open_loop() -> None:
    assert send_times(2.0, 3.0) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert send_times(0.5, 1.0) == [0.0]  # one request at least
    with pytest.raises(ValueError):
        send_times(0.0, 1.0)


def test_bench_soak_answers_every_request_and_reports_memory() -> None:
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "faceproof", "bench", "soak", "--json"),
            *("--duration", "4", "--rate", "2", "--sessions", "1", "--pairs", "2"),
        ],
        env={**os.environ, "FACEPROOF_MODELS_DIR": str(MODELS_DIR)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(completed.stdout)
    compares = result["compares"]
    assert compares["sent"] == 8 and compares["answered"] == 8 and compares["lost"] == 0, compares
    assert compares["by_status"] == {"200": 8}
    latency = compares["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    sessions = result["liveness_sessions"]
    assert sessions["finished"] >= 1 and set(sessions["by_status"]) <= {"SUCCEEDED", "FAILED", "EXPIRED"}
    assert set(result["rss_mib"]) == {"gateway", "matcher-1", "call-agent", "liveness"}
    for name, rss in result["rss_mib"].items():
        assert 20 < rss["start"] <= rss["max"] and rss["end"] <= rss["max"], (name, rss)
    assert result["machine"]["cpus"] >= 1 and len(result["load_average_after"]) == 3
