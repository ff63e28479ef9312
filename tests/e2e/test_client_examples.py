"""The README's client examples run as they are, against the whole stack."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.e2e.conftest import Stack
from tests.paths import PEOPLE, REPO_ROOT

pytestmark = pytest.mark.e2e


def _run(stack: Stack, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        env={**stack.env, **(env or {})},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_http_client_example(stack: Stack) -> None:
    key = _run(stack, "-m", "faceproof", "keys", "create", f"example-{uuid.uuid4().hex[:8]}").split()[-1]
    out = _run(
        stack,
        "examples/client_compare.py",
        str(PEOPLE / "obama.jpg"),
        str(PEOPLE / "obama2.jpg"),
        env={"FACEPROOF_URL": stack.url, "FACEPROOF_API_KEY": key},
    )
    assert "match=True" in out and "status=CREATED" in out


def test_broker_client_example(stack: Stack) -> None:
    name, user, password = (f"example-{uuid.uuid4().hex[:8]}", f"ex-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
    _run(stack, "-m", "faceproof", "keys", "create", name)
    setup = _run(
        stack, "-m", "faceproof", "broker", "setup", "--user", user, "--password", password,
        "--client", name, "--vhost", stack.vhost.name,
    )  # fmt: skip
    client_id = setup.split("acts for API client ")[1].split()[0]
    try:
        out = _run(
            stack,
            "examples/broker_compare.py",
            str(PEOPLE / "obama.jpg"),
            str(PEOPLE / "obama2.jpg"),
            env={
                "FACEPROOF_BROKER_URL": f"amqp://{user}:{password}@127.0.0.1:5672/{stack.vhost.name}",
                "FACEPROOF_BROKER_USER": user,
                "FACEPROOF_CLIENT_ID": client_id,
            },
        )
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False
        )
    assert "match=True" in out
    assert "refused=INVALID_IMAGE" in out
    assert "status=CREATED" in out
