"""`bench compare --profile`: the top items of py-spy's collapsed stacks (faceproof/bench/profile.py)."""

from __future__ import annotations

from pathlib import Path

from faceproof.bench.profile import top_items

GUARD = "RequestGuard.__call__ (services/gateway/limits.py:77)"
SQLITE = "Connection._execute (aiosqlite/core.py:158)"
SESSION = "onnxruntime/capi/onnxruntime_inference_collection.py"
RAW = "\n".join(
    [
        # the event loop waiting in epoll, and a pool thread waiting for work: left out
        "run (asyncio/runners.py:190);EpollSelector.select (selectors.py:468) 40",
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81) 30",
        # busy: the rate limit's SQL under the gateway's middleware, then the model
        f"{GUARD};RateLimitRepository.take (infra/db/security.py:76);{SQLITE} 6",
        f"{GUARD};RequestGuard._scan (services/gateway/limits.py:115) 2",
        f"OnnxModel.run (faces/runtime.py:145);Session.run ({SESSION}:395) 12",
        "",
    ]
)


def test_top_items_leave_out_waiting_threads_and_count_own_and_inclusive_time(tmp_path: Path) -> None:
    raw = tmp_path / "gateway.txt"
    raw.write_text(RAW)
    top = top_items(raw, limit=3)
    assert top["busy_samples"] == 20 and top["waiting_samples"] == 70
    assert top["self"] == [
        {
            "function": "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py)",
            "samples": 12,
            "share": 0.6,
        },
        {"function": "Connection._execute (aiosqlite/core.py)", "samples": 6, "share": 0.3},
        {"function": "RequestGuard._scan (services/gateway/limits.py)", "samples": 2, "share": 0.1},
    ]
    ours = {item["function"]: item["samples"] for item in top["ours"]}
    assert ours == {
        "OnnxModel.run (faces/runtime.py)": 12,
        "RequestGuard.__call__ (services/gateway/limits.py)": 8,
        "RateLimitRepository.take (infra/db/security.py)": 6,
    }
