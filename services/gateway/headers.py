"""Headers every gateway response carries unless its route set them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ResponseHeaders"]

#: Answers hold decisions, client tokens and links to face images (presigned for minutes): no cache
#: keeps them. JSON that echoes a path or a field name is never read as anything else.
_ALWAYS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)
#: A gateway that serves TLS itself tells browsers to come back over TLS only (a proxy in front
#: sets its own).
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class ResponseHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self._app = app
        self._defaults = (*_ALWAYS, _HSTS) if hsts else _ALWAYS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_defaults(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [header for header in self._defaults if header[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, with_defaults)
