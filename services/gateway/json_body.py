"""Large JSON bodies are parsed in a worker thread, not on the event loop.

FastAPI parses a route's JSON body with ``json.loads`` on the loop: ~150 ms for a 27 MiB compare
body on a busy machine, during which no other request moves. :class:`OffloadedJsonRoute` (the
``route_class`` of the routers whose bodies carry images) hands bodies over
:data:`OFFLOAD_ABOVE_BYTES` to ``asyncio.to_thread``; the result and the errors are the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["OFFLOAD_ABOVE_BYTES", "OffloadedJsonRoute"]

#: Bodies larger than this are scanned (services.gateway.limits) and parsed in a worker thread;
#: a smaller one costs well under a millisecond either way.
OFFLOAD_ABOVE_BYTES: Final = 32 * 1024


class _OffloadedJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > OFFLOAD_ABOVE_BYTES:
                self._json = await asyncio.to_thread(json.loads, body)
            else:
                self._json = json.loads(body)
        return self._json


class OffloadedJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def offloaded(request: Request) -> Response:
            return await handler(_OffloadedJsonRequest(request.scope, request.receive))

        return offloaded
