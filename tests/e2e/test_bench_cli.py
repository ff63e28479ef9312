"""`faceproof bench matcher`, `compare`, `peers`, `liveness-capacity`, `liveness-step` and `room`
run end to end, quickly (smoke, not numbers).

`bench peers` installs the peers' own virtual environment from PyPI (pinned in
``faceproof/bench/peers-requirements*.txt``; about 40 s with uv's cache warm) into the test's
temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.paths import MODELS_DIR, REPO_ROOT

pytestmark = pytest.mark.e2e


def bench(*args: str, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "FACEPROOF_MODELS_DIR": str(MODELS_DIR)}
    completed = subprocess.run(
        [sys.executable, "-m", "faceproof", "bench", *args, "--json"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_bench_matcher_prints_stage_latencies_and_throughput() -> None:
    result = bench("matcher", "--iterations", "2", "--max-images", "4", timeout=120)
    assert result["pack"] == "permissive"
    assert result["machine"]["cpus"] >= 1
    for stage in ("decode_ms", "detect_ms", "align_ms", "embed_ms"):
        assert 0 < result[stage]["p50"] <= result[stage]["p95"], stage
    assert set(result["faces_per_s"]) == {"1", "2", "4", "8"}
    assert all(value > 0 for value in result["faces_per_s"].values())
    assert result["threads"]["faces_per_s"] == 1
    # CPU time beside wall time: what the sweep got of the machine, and the work per CPU second.
    assert all(0 < result["cores_used"][n] <= result["machine"]["cpus"] + 0.5 for n in ("1", "2", "4", "8"))
    assert all(value > 0 for value in result["faces_per_cpu_s"].values())


def test_bench_compare_runs_its_own_stack_and_stops_it(tmp_path: Path) -> None:
    result = bench(
        "compare",
        "--workers", "1", "--duration", "3", "--max-requests", "10",
        "--pairs", "3", "--profile", str(tmp_path),
        timeout=150,
    )  # fmt: skip
    for key in ("p50_ms", "p95_ms", "p99_ms", "rps", "inprocess_p50_ms", "overhead_ratio"):
        assert result[key] > 0, key
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["workers"] == 1 and result["concurrency"] == 1
    # The baseline is the matcher's own handler, built with the matchers' thread setting; with one
    # client it takes turns with the requests: one in-process compare of each request's pair.
    assert result["baseline"] == "interleaved"
    assert result["inprocess_samples"] == result["requests"]
    assert result["matcher_intra_op_threads"] >= 1
    assert result["overhead_ratio"] == round(result["p50_ms"] / result["inprocess_p50_ms"], 3)
    assert result["stack_cpu_ms_per_request"] > 0 and result["inprocess_cpu_ms_per_compare"] > 0
    assert result["cpu_overhead_ratio"] > 0
    # the gateway's own share of the stack's CPU, on the default database (no URL in the result)
    assert 0 < result["gateway_cpu_ms_per_request"] < result["stack_cpu_ms_per_request"]
    assert result["database"] == "sqlite"
    assert 0 < result["requests"] <= 10
    assert result["errors"] == 0
    # --profile: py-spy's collapsed stacks of each process during the load, and their top items.
    assert set(result["profile"]) == {"gateway", "matcher-1"}
    # Each process was sampled; the gateway spends about 5 ms of CPU on each of these 10 compares,
    # so py-spy may catch none of it busy (CI, 2026-12-06: an empty gateway.txt), the matcher always.
    assert (tmp_path / "gateway.txt").is_file() and (tmp_path / "matcher-1.txt").stat().st_size > 0
    matcher = result["profile"]["matcher-1"]
    assert matcher["busy_samples"] > 0
    # the models' calls, on whichever runtime runs each (faces.packs.CPU_MODEL_RUNTIMES)
    runs = ("OnnxModel.run (faces/", "OpenCvModel.run (faces/", "OpenVinoModel.run (faces/")
    assert any(item["function"].startswith(runs) for item in matcher["ours"])
    vhost = result["vhost"]
    if vhost.startswith("faceproof-bench-"):  # made with rabbitmqctl: it must be gone again
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert vhost not in listing.split()


def test_bench_peers_runs_ours_and_both_peers_on_the_same_pairs(tmp_path: Path) -> None:
    result = bench("peers", "--limit", "4", "--peers-venv", str(tmp_path / "peers-venv"), timeout=900)
    assert result["pairs"] == 4 and result["images"] == 8
    assert result["pairs_file"].endswith("lfw-devtest/pairs.csv")
    for library in ("ours", "face_recognition", "deepface"):
        run = result[library]
        assert run["pairs"] == 4 and run["images"] == 8, library
        assert 0.0 <= run["accuracy"] <= 1.0 and run["images_per_s"] > 0, library
        assert 0 < run["cores_used"] <= result["machine"]["cpus"] + 0.5, library
    assert result["ours"]["no_face"] == 0  # LFW: a face in every image
    for peer in ("face_recognition", "deepface"):  # the ratios the target reads
        run = result[peer]
        assert run["ratio_images_per_s_vs_ours"] == pytest.approx(
            result["ours"]["images_per_s"] / run["images_per_s"], rel=0.02
        )
        assert run["ratio_images_per_cpu_s_vs_ours"] > 0
        assert run["accuracy_minus_ours"] == pytest.approx(
            run["accuracy"] - result["ours"]["accuracy"], abs=1e-6
        )


def test_bench_liveness_capacity_decides_sessions_against_the_real_worker() -> None:
    result = bench("liveness-capacity", "--sessions", "1", "--no-warmup", "--timeout", "20", timeout=120)
    level = result["levels"]["1"]
    assert level["sessions"] == level["decided"] == 1
    assert level["analysed_fps"]["min"] > 0
    assert level["published_fps"]["min"] > 0
    assert 0 < level["lag_ms"]["p50"] <= level["lag_ms"]["p95"] <= level["lag_ms"]["max"]
    assert level["decision_ms"]["n"] == 1 and level["decision_ms"]["max"] > 0
    assert level["worker_cpu_s"] > 0 and level["cpu_ms_per_frame"] > 0
    assert result["capacity"] in (None, 1)
    assert result["capacity"] == (1 if level["meets_target"] else None)
    assert result["target_met"] is False  # one session cannot show eight


def test_bench_liveness_step_prints_the_cost_per_frame_by_session_length() -> None:
    result = bench("liveness-step", "--size", "5", "--size", "10", "--repeats", "1", timeout=120)
    assert set(result["frames"]) == {"5", "10"}
    for size in ("5", "10"):
        frames = result["frames"][size]
        assert frames["ms_per_frame"] > 0 and frames["cpu_ms_per_frame"] > 0, size
    assert result["ratio_last_to_first_size"] == pytest.approx(
        result["frames"]["10"]["ms_per_frame"] / result["frames"]["5"]["ms_per_frame"], abs=0.01
    )


def test_bench_room_runs_a_video_call_through_a_real_mediasoup_room() -> None:
    result = bench("room", "--repeats", "1", timeout=300)
    [flow] = result["repeats"]
    assert flow["is_live"] is True, flow["reasons"]  # the default subject video is a live person
    assert flow["stored_fps"] > 0 and flow["analysed_fps"] > 0
    assert flow["decision_ms"] > 0
    assert result["summary"]["live"] == 1
