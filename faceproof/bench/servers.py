"""Private RabbitMQ and PostgreSQL servers that a fault run may stop and start at will.

Each lives in a temporary directory of its own, on free ports on 127.0.0.1, under its own names (an
Erlang node ``faceproof-<random>@localhost``, a Postgres cluster made by ``initdb``), so restarting
it never touches the servers other people use (5672, 5432). Its data survives a restart (the Mnesia
directory, the cluster's data directory), as in production.

- RabbitMQ: ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (the real script: Debian's wrapper in
  ``/usr/sbin`` switches to the ``rabbitmq`` user and its log files), with ``RABBITMQ_NODENAME``,
  ``RABBITMQ_NODE_PORT``, ``RABBITMQ_DIST_PORT``, ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE``,
  no plugins (``RABBITMQ_ENABLED_PLUGINS_FILE``: the management plugin would take 15672), a config
  file of its own and an Erlang cookie of its own (``HOME``). The node registers with the machine's
  ``epmd`` under its own name; ``rabbitmqctl -n NODE`` with the same ``HOME`` talks to it.
- PostgreSQL: ``initdb``, ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` (the newest) or the PATH,
  trust authentication on 127.0.0.1 only. ``initdb`` refuses to run as root: as root the cluster is
  made and run as the ``postgres`` user (``runuser``), in a directory it owns.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

from faceproof.bench.environment import BenchError
from faceproof.bench.stack import free_port

__all__ = ["PrivatePostgres", "PrivateRabbitMQ", "QueueState"]

_RABBITMQ_BIN: Final = Path("/usr/lib/rabbitmq/bin")
_START_TIMEOUT_S: Final = 240.0


@dataclass(frozen=True)
class QueueState:
    ready: int
    unacked: int
    consumers: int


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _rabbit_tool(name: str) -> str:
    real = _RABBITMQ_BIN / name
    if real.is_file():
        return str(real)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found: install RabbitMQ (rabbitmq-server)")
    return found


class _PrivateServer(ABC):
    """What both servers share: ``restart`` with a pause, ``close`` that stops and removes the
    directory, and the context manager that starts it (and cleans up when starting fails)."""

    root: Path

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class PrivateRabbitMQ(_PrivateServer):
    """A RabbitMQ node of its own; ``start``, ``stop``, ``restart``; ``close`` removes it all."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="faceproof-rabbitmq-")))
    node: str = field(default_factory=lambda: f"faceproof-{secrets.token_hex(4)}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def _env(self) -> dict[str, str]:
        home = self.root / "home"
        if not home.exists():
            home.mkdir(parents=True)
            cookie = home / ".erlang.cookie"
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
            (self.root / "enabled_plugins").write_text("[].\n")
            (self.root / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
            )
        return {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),  # (none: not /etc's)
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        """``rabbitmqctl -n NODE ARGS``; its standard output. Raises :class:`BenchError` when it fails
        or takes longer than ``timeout_s`` (each call boots an Erlang VM: seconds on a busy machine)."""
        try:
            done = subprocess.run(
                [_rabbit_tool("rabbitmqctl"), "-n", self.node, "-q", *args],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"rabbitmqctl {' '.join(args)} took more than {timeout_s:g} s") from None
        if done.returncode != 0:
            raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def start(self) -> None:
        env = self._env()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [_rabbit_tool("rabbitmq-server")],
                env=env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its script and the Erlang VM: one group, killed together
            )
        self.starts += 1
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"rabbitmq-server exited with {self.process.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                self.ctl("await_startup", "--timeout", "10", timeout_s=60)
                return
            except BenchError:
                pass
            time.sleep(0.5)
        raise BenchError(f"RabbitMQ node {self.node} did not start:\n{_tail(self.log_path)}")

    def _node_pid(self) -> int | None:
        """The Erlang VM's process id (the node writes it at boot), if it is still running."""
        try:
            pid = int((self.root / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def stop(self) -> None:
        """A clean shutdown (``rabbitmqctl shutdown``: clients see their connections closed; under
        a heavy load it may take a minute), else SIGKILL to the server's process group; returns once
        the Erlang VM is gone (a new node on the same ports fails while it lives)."""
        if self.process is None:
            return
        if self.process.poll() is None or self._node_pid() is not None:
            with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
                self.ctl("shutdown", timeout_s=120)
        deadline = time.monotonic() + 30
        while (self.process.poll() is None or self._node_pid() is not None) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.process.poll() is None or self._node_pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            node = self._node_pid()
            if node is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node, signal.SIGKILL)
            self.process.wait(10)
            while self._node_pid() is not None and time.monotonic() < deadline + 10:
                time.sleep(0.2)

    def queues(self) -> dict[str, QueueState]:
        listing = self.ctl("list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers")
        states = {}
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) == 4 and all(value.isdigit() for value in fields[1:]):
                states[fields[0]] = QueueState(int(fields[1]), int(fields[2]), int(fields[3]))
        return states


def _postgres_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: int(path.parts[-3].split(".")[0])
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise BenchError("pg_ctl not found: install PostgreSQL (postgresql)")
    return Path(found).parent


@dataclass
class PrivatePostgres(_PrivateServer):
    """A Postgres cluster of its own with one database, ``faceproof``; ``close`` removes it."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="faceproof-postgres-")))
    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=_postgres_bin)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/faceproof"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def _run(self, *argv: str, timeout_s: float = 120) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=self.root)
        if done.returncode != 0:
            raise BenchError(
                f"{' '.join(argv[:2])} failed: {done.stderr.strip()[-800:]}\n{_tail(self.log_path)}"
            )

    def start(self) -> None:
        data = self.root / "data"
        if not data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
            self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"
        )
        if self.starts == 0:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "faceproof")
        self.starts += 1

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: every session is terminated, open transactions roll back."""
        if (self.root / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
