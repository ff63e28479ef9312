#!/usr/bin/env python3
"""Container health check for the faceproof image (Docker HEALTHCHECK, Kubernetes exec probes).

One image runs every service, so the check looks at what the container's faceproof process runs
(PID 1 is tini, its child is ``faceproof ...``):

- ``faceproof gateway``: GET http://127.0.0.1:$FACEPROOF_PORT/healthz must answer 200
  (``--ready`` asks /readyz instead: database, broker and storage reachable); https:// when the
  gateway serves TLS itself (FACEPROOF_TLS_TERMINATION=native), its certificate not verified (it
  names the public host, not 127.0.0.1, and may be self-signed).
- ``faceproof worker ...``: workers have no HTTP port; the faceproof process itself must hold an
  established TCP connection to the broker's port (from FACEPROOF_BROKER_URL): its own sockets
  only, so another process's connection in a shared network namespace (host networking, a pod's
  sidecar) does not count. A worker that lost RabbitMQ and is reconnecting reports unhealthy until
  it is back.
- anything else (``db upgrade``, ``models fetch``, a shell): healthy while it runs.

Standard library only; exits 0 (healthy) or 1 (unhealthy) and prints one line.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_S = 4.0
TCP_ESTABLISHED = "01"
DEFAULT_AMQP_PORTS = {"amqp": 5672, "amqps": 5671}


def process_argvs(proc: Path = Path("/proc")) -> list[list[str]]:
    """Command lines of the processes this container sees, oldest (lowest pid) first."""
    argvs: list[list[str]] = []
    for entry in sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # the process ended while we looked
            continue
        argvs.append([part.decode(errors="replace") for part in raw.split(b"\0") if part])
    return argvs


def faceproof_pids(proc: Path = Path("/proc")) -> list[int]:
    """The processes whose command line runs ``faceproof`` (tini's and the service's)."""
    pids: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if "faceproof" in [Path(part.decode(errors="replace")).name for part in raw.split(b"\0") if part]:
            pids.append(int(entry.name))
    return pids


def socket_inodes(pids: list[int], proc: Path = Path("/proc")) -> set[int]:
    """The inodes of the sockets these processes hold open."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = list((proc / str(pid) / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def role(argvs: list[list[str]]) -> str:
    """``gateway``, ``worker`` or ``other``: what the first ``faceproof`` process runs."""
    for argv in argvs:
        words = [Path(word).name for word in argv]
        if "faceproof" not in words:
            continue
        after = words[words.index("faceproof") + 1 :]
        if after[:1] == ["gateway"]:
            return "gateway"
        if after[:1] == ["worker"]:
            return "worker"
        return "other"
    return "other"


def broker_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or DEFAULT_AMQP_PORTS.get(parts.scheme, 5672)


def established_remote_ports(proc: Path = Path("/proc"), inodes: set[int] | None = None) -> set[int]:
    """Remote ports of the established TCP connections in this network namespace (only those of
    the sockets in ``inodes`` when given)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        table = proc / "net" / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_ESTABLISHED:
                if inodes is not None and int(fields[9]) not in inodes:
                    continue
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def check_http(path: str) -> tuple[bool, str]:
    port = os.environ.get("FACEPROOF_PORT", "8000")
    context = None
    if os.environ.get("FACEPROOF_TLS_TERMINATION", "").strip().lower() == "native":
        context = ssl.create_default_context()
        context.check_hostname = False  # a probe of our own gateway on loopback
        context.verify_mode = ssl.CERT_NONE
    url = f"{'https' if context else 'http'}://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as error:
        return False, f"{path}: {type(error).__name__}"
    return status == 200, f"{path}: {status}"


def check_broker_connection() -> tuple[bool, str]:
    port = broker_port(os.environ.get("FACEPROOF_BROKER_URL", "amqp://127.0.0.1:5672/"))
    connected = port in established_remote_ports(inodes=socket_inodes(faceproof_pids()))
    return connected, f"broker connection to port {port}: {'up' if connected else 'none'}"


def main(argv: list[str]) -> int:
    ready = "--ready" in argv
    kind = role(process_argvs())
    if kind == "gateway":
        healthy, detail = check_http("/readyz" if ready else "/healthz")
    elif kind == "worker":
        healthy, detail = check_broker_connection()
    else:
        healthy, detail = True, "not a long-running service"
    print(f"{kind}: {detail}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
