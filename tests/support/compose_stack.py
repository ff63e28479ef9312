"""The Docker compose stack of deploy/compose (compose.yaml + the test-only compose.local.yaml) on a
private dockerd: images from scripts/local-images, containers from scripts/local-compose.

Used by tests/e2e/test_compose_stack_e2e.py. The only reason to skip is a dockerd that cannot start
here (not installed, not root, no overlay filesystem...): `Unavailable` carries the reason.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from contracts.routing import ALL_ROUTES, INGRESS_ROUTES
from tests.paths import MODELS_DIR, REPO_ROOT

#: The faceproof containers (one image, the command picks the service) and the one-shot steps.
APP_SERVICES = ("gateway", "matcher", "call-agent", "liveness", "notifier", "ingress")
INFRA_SERVICES = ("rabbitmq", "postgres", "s3")
ONE_SHOT = ("migrate", "models")
#: Every queue some worker consumes: each must have a consumer once the stack is up.
QUEUES = frozenset(route.queue for route in (*ALL_ROUTES, *INGRESS_ROUTES))
IMAGE = os.environ.get("FACEPROOF_LOCAL_IMAGE", "faceproof:0.1.0-local")


class Unavailable(Exception):
    """dockerd cannot run on this machine; the message says why."""


def _run(args: list[str], *, env: dict[str, str], timeout: float, check: bool = True) -> str:
    result = subprocess.run(
        args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


def docker_env() -> dict[str, str]:
    """The environment that reaches the private dockerd (scripts/local-images --daemon starts it, or
    finds it running); ``FACEPROOF_DOCKERD_STARTED=yes`` in it when this call started it."""
    env = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
    result = subprocess.run(
        ["scripts/local-images", "--daemon"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise Unavailable((result.stderr or result.stdout).strip())
    host = next(line for line in result.stdout.splitlines() if line.startswith("DOCKER_HOST="))
    env["DOCKER_HOST"] = host.partition("=")[2]
    env["FACEPROOF_DOCKERD_STARTED"] = "yes" if "STARTED=yes" in result.stdout.splitlines() else "no"
    return env


def stop_docker(env: dict[str, str]) -> None:
    """Stop the private dockerd if ``docker_env`` started it (one found running is left running)."""
    if env.get("FACEPROOF_DOCKERD_STARTED") == "yes":
        subprocess.run(
            ["scripts/local-images", "--stop"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=60
        )


def build_images(env: dict[str, str]) -> float:
    """scripts/local-images (cached: seconds when nothing changed); the seconds it took."""
    started = time.monotonic()
    _run(["scripts/local-images"], env=env, timeout=1800)
    return time.monotonic() - started


def _free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 (weed's S3 port and its nine)."""
    for _ in range(200):
        first = random.randrange(20000, 32000 - count)
        try:
            socks = []
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def _free_ports(count: int, *, taken: range) -> list[int]:
    """``count`` ports free now and outside ``taken`` (the S3 server's run: free now too, but its
    ports are bound only once the stack starts, so a port picked inside it would clash)."""
    ports: set[int] = set()
    while len(ports) < count:
        port = _free_port_run(1)
        if port not in taken:
            ports.add(port)
    return sorted(ports)


@dataclass
class ComposeStack:
    project: str
    env: dict[str, str]
    url: str
    token: str
    broker_url: str
    workdir: Path
    #: Seconds from `up` to a ready gateway and every queue consumed.
    up_s: float = 0.0
    #: Each container's name by service.
    containers: dict[str, str] = field(default_factory=dict)

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return _run(["docker", *args], env=self.env, timeout=timeout, check=check)

    def compose(self, *args: str, timeout: float = 600) -> str:
        return _run(["scripts/local-compose", *args], env=self.env, timeout=timeout)

    def inspect(self, service: str) -> dict[str, object]:
        loaded: list[dict[str, object]] = json.loads(self.docker("inspect", self.containers[service]))
        return loaded[0]

    def health(self, service: str) -> str:
        return self.docker("inspect", "-f", "{{.State.Health.Status}}", self.containers[service]).strip()

    def queues(self) -> dict[str, tuple[int, int, int]]:
        """Each queue: (consumers, messages ready, messages unacknowledged)."""
        listing = self.docker(
            "exec", self.containers["rabbitmq"], "rabbitmqctl", "-q", "list_queues",
            "name", "consumers", "messages_ready", "messages_unacknowledged", "--no-table-headers",
        )  # fmt: skip
        result: dict[str, tuple[int, int, int]] = {}
        for line in listing.splitlines():
            parts = line.split()
            if len(parts) == 4:
                result[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
        return result

    def unconsumed(self) -> set[str]:
        queues = self.queues()
        return {name for name in QUEUES if queues.get(name, (0, 0, 0))[0] == 0}

    def wait_ready(self, seconds: float = 300, services: tuple[str, ...] = APP_SERVICES) -> float:
        """Until the gateway answers /readyz, ``services`` are healthy and every queue has a
        consumer; the seconds it took. Raises with the logs' ends on timeout."""
        started = time.monotonic()
        deadline = started + seconds
        missing: object = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200
            except httpx.HTTPError:
                ready = False
            unhealthy = [name for name in services if self.health(name) != "healthy"]
            try:
                unconsumed: list[str] = sorted(self.unconsumed())
            except (RuntimeError, subprocess.TimeoutExpired):  # RabbitMQ down or rabbitmqctl too slow
                unconsumed = ["(rabbitmqctl did not answer)"]
            missing = ("gateway not ready" if not ready else None, unhealthy, unconsumed)
            if ready and not unhealthy and not unconsumed:
                return time.monotonic() - started
            time.sleep(1)
        raise RuntimeError(f"the stack was not ready in {seconds} s ({missing}):\n{self.logs_tail()}")

    def logs_tail(self, lines: int = 30, services: tuple[str, ...] | None = None) -> str:
        parts = []
        for service, name in self.containers.items():
            if services is not None and service not in services:
                continue
            result = subprocess.run(
                ["docker", "logs", "--tail", str(lines), name],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            parts.append(f"--- {service}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)

    def save_logs(self) -> None:
        for service, name in self.containers.items():
            result = subprocess.run(["docker", "logs", name], env=self.env, capture_output=True, timeout=60)
            (self.workdir / f"{service}.log").write_bytes(result.stdout + result.stderr)


def _env_files(
    workdir: Path, ports: dict[str, int], settings: dict[str, str], token: str | None
) -> tuple[Path, str]:
    """The stack's env file (make-secrets.sh's secrets, ``token`` in place of its API token when
    given, the ports) and its settings file; the API token."""
    env_file = workdir / "stack.env"
    subprocess.run(
        ["sh", "deploy/compose/make-secrets.sh", str(env_file)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    if token is not None:
        lines = env_file.read_text().splitlines()
        mine = [
            f"FACEPROOF_API_TOKEN={token}" if line.startswith("FACEPROOF_API_TOKEN=") else line
            for line in lines
        ]
        env_file.write_text("\n".join(mine) + "\n")
    settings_file = workdir / "settings.env"
    settings_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    with env_file.open("a") as out:
        for key, value in ports.items():
            out.write(f"{key}={value}\n")
        out.write(f"FACEPROOF_ENV_FILE={settings_file}\n")
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return env_file, values["FACEPROOF_API_TOKEN"]


@contextmanager
def compose_stack(
    workdir: Path, env: dict[str, str], settings: dict[str, str], *, token: str | None = None
) -> Iterator[ComposeStack]:
    """`scripts/local-compose up -d` on fresh ports and volumes; `down -v` afterwards (logs kept in
    ``workdir``)."""
    s3_port = _free_port_run(10)
    gateway, rabbit, dist, epmd, postgres, *metrics = _free_ports(
        5 + len(APP_SERVICES), taken=range(s3_port, s3_port + 10)
    )
    ports = {
        "LOCAL_GATEWAY_PORT": gateway,
        "LOCAL_RABBITMQ_PORT": rabbit,
        "LOCAL_RABBITMQ_DIST_PORT": dist,
        "LOCAL_EPMD_PORT": epmd,
        "LOCAL_POSTGRES_PORT": postgres,
        "LOCAL_S3_PORT": s3_port,
        **{
            f"LOCAL_METRICS_PORT_{name.upper().replace('-', '_')}": port
            for name, port in zip(APP_SERVICES, metrics, strict=True)
        },
    }
    env_file, token = _env_files(workdir, ports, settings, token)
    secrets = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    project = f"faceproof-e2e-{os.urandom(4).hex()}"
    stack = ComposeStack(
        project=project,
        env={
            **env,
            "FACEPROOF_LOCAL_ENV_FILE": str(env_file),
            "FACEPROOF_LOCAL_PROJECT": project,
            "FACEPROOF_LOCAL_MODELS_DIR": str(MODELS_DIR),
        },
        url=f"http://127.0.0.1:{gateway}",
        token=token,
        broker_url=f"amqp://faceproof:{quote(secrets['RABBITMQ_PASSWORD'], safe='')}@127.0.0.1:{rabbit}/",
        workdir=workdir,
    )
    try:
        started = time.monotonic()
        for service in (*INFRA_SERVICES, *ONE_SHOT, *APP_SERVICES):
            stack.containers[service] = f"{project}_{service}_1"
        try:
            stack.compose("up", "-d")
        except RuntimeError as error:  # (a one-shot step failed, say): say why
            raise RuntimeError(f"{error}\n{stack.logs_tail()}") from error
        stack.wait_ready()
        stack.up_s = time.monotonic() - started
        yield stack
    finally:
        if stack.containers:
            stack.save_logs()
        subprocess.run(
            ["scripts/local-compose", "down", "-v", "--timeout", "5"],
            env=stack.env, cwd=REPO_ROOT, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
