"""The image's health check (deploy/docker/healthcheck.py), against real sockets and a real HTTP server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import ssl
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


def test_gateway_check_speaks_https_when_the_gateway_serves_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FACEPROOF_TLS_TERMINATION=native: the gateway answers TLS only, with a certificate for its
    public name (here self-signed), which a probe on 127.0.0.1 does not verify."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make a self-signed certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fp.example"]
    subprocess.run(
        [openssl, *self_signed, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("FACEPROOF_PORT", str(server.server_address[1]))
        monkeypatch.setenv("FACEPROOF_TLS_TERMINATION", "native")
        assert hc.check_http("/healthz") == (True, "/healthz: 200")
        assert hc.check_http("/readyz") == (False, "/readyz: 503")
        monkeypatch.setenv("FACEPROOF_TLS_TERMINATION", "proxy")  # plain HTTP to a TLS port fails
        healthy, _ = hc.check_http("/healthz")
        assert not healthy
    finally:
        server.shutdown()
        server.server_close()
