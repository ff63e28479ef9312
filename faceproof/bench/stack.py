"""A throw-away stack for a benchmark: gateway + K matcher processes, stopped whatever happens.

Everything lives under a temporary directory (SQLite database, local object store, logs) and,
when ``rabbitmqctl`` works, in a RabbitMQ virtual host of its own, deleted at the end. Without
``rabbitmqctl`` the default virtual host is used and a warning says so: another matcher on that
host would take some of the benchmark's messages.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from contracts.routing import MATCHER_COMPARE
from faceproof.bench.environment import REPO_ROOT, BenchError, process_cpu_s

__all__ = ["RabbitVhost", "Stack", "StackConfig", "free_port", "running_stack", "terminate_on_sigterm"]

_PR_SET_PDEATHSIG: Final = 1
_STOP_TIMEOUT_S: Final = 20.0
Warn = Callable[[str], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the benchmark process dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the duration, so ``finally`` blocks stop the children."""

    def on_term(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class RabbitVhost:
    """A RabbitMQ virtual host made with ``rabbitmqctl`` (``name`` None: the broker URL's own)."""

    url: str
    name: str | None


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _with_vhost(broker_url: str, vhost: str) -> str:
    parts = urlsplit(broker_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", parts.query, parts.fragment))


@contextlib.contextmanager
def rabbit_vhost(broker_url: str, warn: Warn) -> Iterator[RabbitVhost]:
    """A fresh virtual host on the broker, deleted afterwards; the default one if that is impossible."""
    name = f"faceproof-bench-{uuid.uuid4().hex[:10]}"
    if shutil.which("rabbitmqctl") is None:
        warn(
            "rabbitmqctl not found: using the broker URL's virtual host; other matchers there share the queue"
        )
        yield RabbitVhost(broker_url, None)
        return
    try:
        _ctl("add_vhost", name)
        _ctl("set_permissions", "-p", name, urlsplit(broker_url).username or "guest", ".*", ".*", ".*")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            _ctl("delete_vhost", name)
        warn(f"rabbitmqctl failed ({error}): using the broker URL's virtual host instead")
        yield RabbitVhost(broker_url, None)
        return
    try:
        yield RabbitVhost(_with_vhost(broker_url, name), name)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            _ctl("delete_vhost", name)


def queue_consumers(vhost: str, queue: str) -> int | None:
    """Consumers on ``queue`` according to ``rabbitmqctl`` (None when it cannot say)."""
    try:
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return None
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == queue and fields[1].isdigit():
            return int(fields[1])
    return 0


@dataclass(frozen=True)
class StackConfig:
    workers: int
    models_dir: Path
    broker_url: str
    pack: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    #: Other workers to start beside the matchers (``faceproof worker NAME``), e.g. the call agent;
    #: a name given more than once starts that many (``NAME-1``, ``NAME-2``...).
    other_workers: tuple[str, ...] = ()
    #: A database of the caller's (migrated here); None: a temporary SQLite file.
    database_url: str | None = None
    #: False: the broker URL's own virtual host (a private broker: nobody else uses it).
    own_vhost: bool = True
    #: False: no gateway (and ``workers`` may be 0): only the workers, e.g. the liveness worker alone.
    gateway: bool = True


@dataclass
class Stack:
    url: str
    token: str
    vhost: RabbitVhost
    workers: int
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]]
    #: The database every process of the stack uses (migrated).
    database_url: str = ""

    def log_tail(self, chars: int = 2000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far by the gateway and the matchers together (None: cannot tell)."""
        total = 0.0
        for process in self.processes.values():
            used = process_cpu_s(process.pid)
            if used is None:
                return None
            total += used
        return total

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                raise BenchError(f"{name} exited with code {code}; its logs:\n{self.log_tail()}")


def _start(name: str, argv: list[str], env: Mapping[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "faceproof", *argv],
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def _stop(processes: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, wait for them, SIGKILL those still alive."""
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for process in processes.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(stack: Stack, timeout_s: float) -> None:
    if not stack.url:
        return  # no gateway: the caller waits for its workers (e.g. with queue_consumers)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=3, trust_env=False) as client:
        while time.monotonic() < deadline:
            stack.check_alive()
            try:
                if client.get(f"{stack.url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise BenchError(f"the gateway was not ready within {timeout_s:g} s; logs:\n{stack.log_tail()}")
    if stack.vhost.name is None:
        return
    while time.monotonic() < deadline:  # every matcher has loaded its models and subscribed
        stack.check_alive()
        consumers = queue_consumers(stack.vhost.name, MATCHER_COMPARE.queue)
        if consumers is None or consumers >= stack.workers:
            return
        time.sleep(0.3)
    raise BenchError(f"the matchers did not subscribe within {timeout_s:g} s; logs:\n{stack.log_tail()}")


@contextlib.contextmanager
def running_stack(config: StackConfig, warn: Warn) -> Iterator[Stack]:
    """Migrate a fresh SQLite database (or ``database_url``), start the gateway and ``workers`` matchers
    (and ``other_workers``), yield, stop them all."""
    if config.workers < (1 if config.gateway else 0):
        raise BenchError("--workers must be at least 1")
    vhosts = (
        rabbit_vhost(config.broker_url, warn)
        if config.own_vhost
        else contextlib.nullcontext(RabbitVhost(config.broker_url, None))
    )
    with tempfile.TemporaryDirectory(prefix="faceproof-bench-") as temp, vhosts as vhost:
        root = Path(temp)
        logs = root / "logs"
        logs.mkdir()
        port = free_port()
        token = secrets.token_urlsafe(24)
        database_url = config.database_url or f"sqlite+aiosqlite:///{root / 'data' / 'faceproof.db'}"
        env = {
            **os.environ,
            **config.extra_env,
            "FACEPROOF_DATA_DIR": str(root / "data"),
            "FACEPROOF_DATABASE_URL": database_url,
            "FACEPROOF_STORAGE_URL": (root / "data" / "objects").as_uri(),
            "FACEPROOF_BROKER_URL": vhost.url,
            "FACEPROOF_MODELS_DIR": str(config.models_dir),
            "FACEPROOF_API_TOKEN": token,
            "FACEPROOF_HOST": "127.0.0.1",
            "FACEPROOF_PORT": str(port),
            "FACEPROOF_METRICS_PORT": "0",  # several workers on one host would share one port
        }
        if config.pack:
            env["FACEPROOF_MODEL_PACK"] = config.pack
        (root / "data").mkdir()
        migrated = subprocess.run(
            [sys.executable, "-m", "faceproof", "db", "upgrade"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrated.returncode != 0:
            raise BenchError(f"`faceproof db upgrade` failed:\n{migrated.stderr[-2000:]}")
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            if config.gateway:
                processes["gateway"] = _start("gateway", ["gateway"], env, logs)
            for index in range(config.workers):
                processes[f"matcher-{index + 1}"] = _start(
                    f"matcher-{index + 1}", ["worker", "matcher"], env, logs
                )
            for index, name in enumerate(config.other_workers):
                label = name if config.other_workers.count(name) == 1 else f"{name}-{index + 1}"
                processes[label] = _start(label, ["worker", name], env, logs)
            stack = Stack(
                url=f"http://127.0.0.1:{port}" if config.gateway else "",
                token=token,
                vhost=vhost,
                workers=config.workers,
                logs=logs,
                processes=processes,
                database_url=database_url,
            )
            _wait_ready(stack, config.ready_timeout_s)
            yield stack
        finally:
            _stop(processes)
