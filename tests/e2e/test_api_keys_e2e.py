"""API keys made with `faceproof keys` authenticate; revoked keys and other clients' sessions do not."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.e2e.conftest import Stack
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.e2e


def faceproof(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faceproof", *args],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_key(stack: Stack, name: str) -> str:
    result = faceproof(stack, "keys", "create", name)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("fp_")
    return key


def test_key_lifecycle(stack: Stack) -> None:
    name = f"app-{uuid.uuid4().hex[:8]}"
    key = create_key(stack, name)
    assert faceproof(stack, "keys", "create", name).returncode == 1  # names are unique

    listing = faceproof(stack, "keys", "list").stdout
    assert name in listing and key not in listing  # only the prefix is shown

    with stack.client(key) as client:
        assert client.post("/v1/sessions", json={}).status_code == 201
    assert faceproof(stack, "keys", "revoke", name).returncode == 0
    with stack.client(key) as client:
        assert client.post("/v1/sessions", json={}).status_code == 401


def test_clients_see_only_their_own_sessions(stack: Stack) -> None:
    alice, bob = (create_key(stack, f"{who}-{uuid.uuid4().hex[:8]}") for who in ("alice", "bob"))
    with stack.client(alice) as client:
        session_id = client.post("/v1/sessions", json={"clientRequestToken": "same-token"}).json()[
            "sessionId"
        ]
        assert client.get(f"/v1/sessions/{session_id}").status_code == 200
    with stack.client(bob) as client:
        assert client.get(f"/v1/sessions/{session_id}").status_code == 404
        other = client.post("/v1/sessions", json={"clientRequestToken": "same-token"}).json()["sessionId"]
        assert other != session_id  # idempotency is per client
