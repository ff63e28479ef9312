"""The attack: the real gateway process, listening on every interface (0.0.0.0, as the compose file
runs it) with the public development token or a default password. It must refuse to start, naming
the setting; with the operator's own secrets the same bind starts and the development token is
refused at its port."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.settings import DEVELOPMENT_TOKEN
from tests.e2e.conftest import free_port
from tests.paths import REPO_ROOT
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.e2e

EVERY_INTERFACE = "0.0.0.0"


def gateway_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """A development gateway on its own SQLite file and local storage (no inherited FACEPROOF_*)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FACEPROOF_")}
    env.update(
        {
            "FACEPROOF_DATA_DIR": str(data_dir),
            "FACEPROOF_PORT": str(port),
            "FACEPROOF_HOST": "127.0.0.1",
            "FACEPROOF_METRICS_PORT": "0",  # (9100 may be taken by a `faceproof up` running here)
        }
    )
    env.update(settings)
    return env


def run_gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faceproof", "gateway", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("how", ["FACEPROOF_HOST", "--host"])
def test_the_development_token_on_every_interface_is_refused_at_start(tmp_path: Path, how: str) -> None:
    port = free_port()
    env = gateway_env(tmp_path, port, FACEPROOF_API_TOKEN=DEVELOPMENT_TOKEN)
    if how == "FACEPROOF_HOST":
        env["FACEPROOF_HOST"] = EVERY_INTERFACE
        result = run_gateway(env)
    else:
        result = run_gateway(env, "--host", EVERY_INTERFACE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refuses to start" in result.stderr
    assert "FACEPROOF_API_TOKEN is the public development token" in result.stderr
    assert "'0.0.0.0' (FACEPROOF_HOST)" in result.stderr
    assert not listening(port)


def test_the_built_in_token_default_is_refused_too(tmp_path: Path) -> None:
    """An env file with every line commented out (compose's default .env.example) leaves the
    built-in default token in place: refused on 0.0.0.0 all the same."""
    port = free_port()
    result = run_gateway(gateway_env(tmp_path, port, FACEPROOF_HOST=EVERY_INTERFACE))
    assert result.returncode == 2
    assert "FACEPROOF_API_TOKEN is the public development token" in result.stderr
    assert not listening(port)


def test_a_default_broker_password_on_every_interface_is_refused(tmp_path: Path) -> None:
    port = free_port()
    env = gateway_env(
        tmp_path,
        port,
        FACEPROOF_HOST=EVERY_INTERFACE,
        FACEPROOF_API_TOKEN=secrets.token_urlsafe(32),
        FACEPROOF_BROKER_URL="amqp://faceproof:faceproof@127.0.0.1:5672/",
    )
    result = run_gateway(env)
    assert result.returncode == 2
    assert "FACEPROOF_BROKER_URL uses a well-known default password" in result.stderr
    assert not listening(port)


@pytest.fixture
def own_broker_url() -> Iterator[str]:
    """A RabbitMQ user with a password of its own, on a throw-away vhost."""
    user, password = f"fp-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    with temporary_vhost() as vhost:
        ctl = ["rabbitmqctl", "-q"]
        subprocess.run([*ctl, "add_user", user, password], check=True, capture_output=True, timeout=60)
        try:
            subprocess.run(
                [*ctl, "set_permissions", "-p", vhost.name, user, ".*", ".*", ".*"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            yield f"amqp://{user}:{password}@127.0.0.1:5672/{vhost.name}"
        finally:
            subprocess.run([*ctl, "delete_user", user], check=False, capture_output=True, timeout=60)


@contextlib.contextmanager
def running_gateway(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`faceproof gateway --migrate` with ``env``, ready; yields its URL on 127.0.0.1."""
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "faceproof", "gateway", "--migrate"],
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{env['FACEPROOF_PORT']}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the gateway was not ready:\n" + log_path.read_text())
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_own_secrets_start_on_every_interface_and_the_development_token_is_refused(
    tmp_path: Path, own_broker_url: str
) -> None:
    port, token = free_port(), secrets.token_urlsafe(32)
    env = gateway_env(
        tmp_path,
        port,
        FACEPROOF_HOST=EVERY_INTERFACE,
        FACEPROOF_API_TOKEN=token,
        FACEPROOF_BROKER_URL=own_broker_url,
    )
    with running_gateway(env, tmp_path / "gateway.log") as url:
        unknown = f"{url}/v1/sessions/{uuid.uuid4().hex}"
        attacker = httpx.get(unknown, headers={"Authorization": f"Bearer {DEVELOPMENT_TOKEN}"}, timeout=10)
        assert attacker.status_code == 401
        operator = httpx.get(unknown, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert operator.status_code == 404  # authenticated; the session does not exist


def test_the_development_token_is_refused_for_another_host_name_dns_rebinding(
    tmp_path: Path, own_broker_url: str
) -> None:
    """The attack: `faceproof up` on 127.0.0.1 with the public development token, and a web page the
    developer opens whose name the attacker re-resolves to 127.0.0.1 (DNS rebinding): the page's
    requests reach the gateway from the developer's own browser, same-origin, with Host: its name.
    Every admin route answered them (201, 200)."""
    env = gateway_env(tmp_path, free_port(), FACEPROOF_API_TOKEN=DEVELOPMENT_TOKEN)
    env["FACEPROOF_BROKER_URL"] = own_broker_url
    bearer = {"Authorization": f"Bearer {DEVELOPMENT_TOKEN}"}
    with running_gateway(env, tmp_path / "gateway.log") as url:
        port = env["FACEPROOF_PORT"]
        for host in (f"attacker.example:{port}", "attacker.example", f"192.0.2.7:{port}"):
            rebound = httpx.get(f"{url}/v1/admin/usage", headers={**bearer, "Host": host}, timeout=10)
            assert rebound.status_code == 401, host
            assert "only at localhost" in rebound.json()["detail"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            own = httpx.get(f"{url}/v1/admin/usage", headers={**bearer, "Host": host}, timeout=10)
            assert own.status_code == 200, host
