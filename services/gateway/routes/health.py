"""Liveness and readiness probes: public (load balancers call them), so they say ``ok`` or
``down`` per dependency and nothing more (no host, URL, version or error text)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from infra.db.engine import ping as ping_database
from services.gateway.dependencies import ResourcesDep

log = logging.getLogger("faceproof.gateway")
router = APIRouter(tags=["health"])
PROBE_TIMEOUT_S = 3.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Callable[[], Awaitable[object]]) -> str:
    """``ok`` or ``down``; why it is down goes to the log only (the probe is public)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            result = await probe()
    except Exception as error:
        log.warning("readiness: %s is down (%s)", name, type(error).__name__)
        return "down"
    if result is False:
        log.warning("readiness: %s is down", name)
        return "down"
    return "ok"


@router.get("/readyz", summary="Database, broker and storage are reachable")
async def readyz(res: ResourcesDep) -> JSONResponse:
    names = ("database", "broker", "storage")
    results = await asyncio.gather(
        _check("database", lambda: ping_database(res.database)),
        _check("broker", lambda: res.broker.ping(timeout=PROBE_TIMEOUT_S)),
        _check("storage", res.store.ping),
    )
    checks = dict(zip(names, results, strict=True))
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )
