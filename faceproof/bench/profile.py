"""`bench compare --profile DIR`: py-spy on the stack's processes while the load runs, and the top items.

Each process (gateway, matchers) gets its own ``py-spy record --format raw --nonblocking`` (py-spy
is in the ``dev`` group), stopped with SIGINT when the load ends; ``DIR/<process>.txt`` holds the
collapsed stacks, one line per stack and its sample count, which flame graph tools read as they are.
:func:`top_items` sums them: samples in which the thread was waiting (its innermost frame one of
:data:`WAITING_FRAMES`) are left out, the rest counted by innermost function (``self``) and by every
function of this repository on the stack (``ours``, inclusive).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from faceproof.bench.environment import BenchError

__all__ = ["WAITING_FRAMES", "sampling", "top_items"]

#: Innermost frames (``file:line`` endings) where a thread waits rather than runs: the event loop
#: in epoll, a pool thread or aiosqlite's thread on its queue, a lock. py-spy's own idle detection
#: misses these in non-blocking mode.
WAITING_FRAMES: Final = (
    "selectors.py:468)",
    "runners.py:118)",
    "thread.py:81)",
    "threading.py:320)",
    "threading.py:324)",
    "threading.py:327)",
    "aiosqlite/core.py:59)",
)
_RATE_HZ: Final = 50


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if found is None:
        raise BenchError("py-spy not found (it is in the dev group: uv sync --group dev)")
    return found


@contextlib.contextmanager
def sampling(pids: Mapping[str, int], out_dir: Path) -> Iterator[None]:
    """Record each named process into ``out_dir/<name>.txt`` while the block runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = _py_spy()
    samplers: list[subprocess.Popen[bytes]] = []
    for name, pid in pids.items():
        argv = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--nonblocking",
            "--rate",
            str(_RATE_HZ),
        ]
        with (out_dir / f"{name}.log").open("wb") as log:
            samplers.append(
                subprocess.Popen(
                    [*argv, "--output", str(out_dir / f"{name}.txt")], stdout=log, stderr=subprocess.STDOUT
                )
            )
    try:
        yield
    finally:
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for sampler in samplers:
            try:
                sampler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sampler.kill()


_OUR_PACKAGES: Final = ("contracts/", "domain/", "faces/", "infra/", "services/", "faceproof/")


def _function(frame: str) -> str:
    """``name (path:line)``, as py-spy writes a frame (paths relative to ``sys.path``), without the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})"


def _ours(frame: str) -> bool:
    return frame.partition(" (")[2].startswith(_OUR_PACKAGES)


def top_items(raw: Path, limit: int = 12) -> dict[str, Any]:
    """Busy samples and the top ``self`` and ``ours`` (inclusive) functions, with their shares."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = waiting = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if frame.strip()]
        if not frames or not count.isdigit():
            continue
        samples = int(count)
        if frames[-1].endswith(WAITING_FRAMES):
            waiting += samples
            continue
        busy += samples
        own[_function(frames[-1])] += samples
        for function in {_function(frame) for frame in frames if _ours(frame)}:
            inclusive[function] += samples

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "share": round(n / busy, 3)}
            for name, n in counter.most_common(limit)
        ]

    return {"busy_samples": busy, "waiting_samples": waiting, "self": shares(own), "ours": shares(inclusive)}
