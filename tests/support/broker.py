"""A throw-away RabbitMQ virtual host per test run, so runs never share queues."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

BASE_URL = "amqp://guest:guest@127.0.0.1:5672"


@dataclass(frozen=True)
class RabbitVhost:
    name: str

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.name}"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def temporary_vhost() -> Iterator[RabbitVhost]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create a test virtual host (is RabbitMQ installed?)")
    vhost = RabbitVhost(f"faceproof-test-{uuid.uuid4().hex[:10]}")
    _ctl("add_vhost", vhost.name)
    try:
        _ctl("set_permissions", "-p", vhost.name, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        _ctl("delete_vhost", vhost.name)
