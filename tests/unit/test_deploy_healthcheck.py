"""The image's health check (deploy/docker/healthcheck.py), against real sockets and a real HTTP server."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faceproof_healthcheck", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = load()


def test_role_from_command_lines() -> None:
    tini = ["tini", "--", "faceproof", "gateway"]
    python = ["/app/.venv/bin/python", "/app/.venv/bin/faceproof", "worker", "matcher"]
    assert hc.role([tini, python]) == "gateway"
    assert hc.role([["tini", "--", "faceproof", "worker", "liveness"]]) == "worker"
    assert hc.role([["faceproof", "db", "upgrade"]]) == "other"
    assert hc.role([["sh"], ["faceproof-healthcheck"]]) == "other"


def test_broker_port_from_url() -> None:
    assert hc.broker_port("amqp://u:p@rabbitmq:5673/") == 5673
    assert hc.broker_port("amqp://u:p@rabbitmq/") == 5672
    assert hc.broker_port("amqps://u:p@rabbitmq/vhost") == 5671


def test_established_connections_are_seen() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert port not in hc.established_remote_ports()
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            accepted, _ = server.accept()
            with accepted:
                assert port in hc.established_remote_ports()


def test_only_the_given_processes_connections_count() -> None:
    """Host networking (and a pod's sidecars) share the connection table: the worker's check looks
    at the faceproof process's own sockets, so another process's broker connection does not count."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            accepted, _ = server.accept()
            with accepted:
                assert port in hc.established_remote_ports(inodes=hc.socket_inodes([os.getpid()]))
                other = subprocess.Popen(["sleep", "30"])
                try:
                    assert port not in hc.established_remote_ports(inodes=hc.socket_inodes([other.pid]))
                finally:
                    other.kill()
                    other.wait()


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_gateway_check_asks_healthz_or_readyz(http_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEPROOF_PORT", str(http_port))
    assert hc.check_http("/healthz") == (True, "/healthz: 200")
    assert hc.check_http("/readyz") == (False, "/readyz: 503")
    monkeypatch.setenv("FACEPROOF_PORT", "1")
    healthy, _ = hc.check_http("/healthz")
    assert not healthy
