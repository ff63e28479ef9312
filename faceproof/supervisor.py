"""`faceproof up`: every service as its own process, restarted if it dies, stopped together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # None: this process's environment
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()

    def stop(self, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def service_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "faceproof", *args]


def supervise(children: list[Child], *, stop_timeout: float = 20.0) -> int:
    """Run until SIGINT/SIGTERM; restart a child that exits, with a growing back-off."""
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.start()
        while not stopping:
            time.sleep(0.5)
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is None or stopping:
                    continue
                if time.monotonic() - child.started_at > 60:
                    child.restarts = 0
                delay = RESTART_BACKOFF_S[min(child.restarts, len(RESTART_BACKOFF_S) - 1)]
                print(
                    f"faceproof up: {child.name} exited with {code}; restarting in {delay:g} s",
                    file=sys.stderr,
                )
                time.sleep(delay)
                child.restarts += 1
                child.start()
    finally:
        for child in children:
            child.stop(stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
