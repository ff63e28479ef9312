"""`faceproof up` with its embedded defaults, and the README's curl examples run against it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import free_port, wait_ready
from tests.paths import DATA_DIR, MODELS_DIR, REPO_ROOT
from tests.support.broker import temporary_vhost

pytestmark = pytest.mark.e2e


def readme_try_it_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "README has no ```sh block under 'Try it'"
    return match.group(1)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("up")
    port = free_port()
    with temporary_vhost() as vhost:
        env = {
            **os.environ,
            "FACEPROOF_DATA_DIR": str(data_dir),
            "FACEPROOF_BROKER_URL": vhost.url,
            "FACEPROOF_MODELS_DIR": str(MODELS_DIR),
            "FACEPROOF_PORT": str(port),
        }
        for key in ("FACEPROOF_DATABASE_URL", "FACEPROOF_STORAGE_URL", "FACEPROOF_API_TOKEN"):
            env.pop(key, None)
        log = (data_dir / "up.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "faceproof", "up"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, [process], data_dir)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 0
            assert (data_dir / "faceproof.db").exists()  # the embedded SQLite default


def test_readme_examples_work_against_faceproof_up(up: str) -> None:
    script = (
        readme_try_it_block().replace("http://127.0.0.1:8000", up).replace("../shared/data", str(DATA_DIR))
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    same, group, legacy, session = answers
    assert same["match"] is True
    assert len(group["targetFaces"]) == 3 and sum(face["match"] for face in group["targetFaces"]) == 1
    assert set(legacy) == {"comparisonResult"} and legacy["comparisonResult"] < same["similarity"]
    assert session["clientRequestToken"] == "order-42" and session["status"] == "CREATED"
