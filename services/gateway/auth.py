"""Bearer-token authentication: the static development token or a hashed per-client API key."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from infra.db.repositories import ApiClient
from services.gateway.problems import ProblemError

#: Owner recorded for what the static development token creates.
STATIC_OWNER = "static"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client, or the holder of the static token."""

    owner: str
    client_id: str | None


class ApiKeys(Protocol):
    async def authenticate(self, key: str) -> ApiClient | None: ...


class Authenticator:
    def __init__(self, keys: ApiKeys, static_token: str | None) -> None:
        self._keys = keys
        self._static = static_token

    async def __call__(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("Send 'Authorization: Bearer <token>'.")
        if self._static and hmac.compare_digest(token.encode(), self._static.encode()):
            return Principal(owner=STATIC_OWNER, client_id=None)
        client = await self._keys.authenticate(token)
        if client is None:
            raise _unauthorized("The token is not valid.")
        return Principal(owner=client.id, client_id=client.id)


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401, "Unauthorized", detail, code="UNAUTHORIZED", headers={"WWW-Authenticate": "Bearer"}
    )
