"""Bearer-token authentication: the static development token or a hashed per-client API key."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final, Protocol

from starlette.types import Scope

from domain.limits import Limits
from infra.db.keys import KEY_SCHEME
from infra.db.repositories import ApiClient
from infra.environment import is_loopback
from infra.settings import DEVELOPMENT_TOKEN
from services.gateway.failed_logins import FailedLogins
from services.gateway.problems import ProblemError
from services.intake.caller import Caller

#: Owner recorded for what the static development token creates.
STATIC_OWNER = "static"
#: Where the request guard leaves the caller it authenticated (the request's state).
_STATE_KEY: Final = "faceproof_principal"


@dataclass(frozen=True)
class Principal(Caller):
    """Who is calling: an API client, or the holder of the static token (the owner of what it
    creates, as the intake use cases take it)."""

    #: The client's rate, burst and monthly quota (None: not rate limited).
    limits: Limits | None = None
    #: May read every client's usage (admin keys; the static token).
    admin: bool = False


class ApiKeys(Protocol):
    async def authenticate(self, key: str) -> ApiClient | None: ...


class Authenticator:
    def __init__(
        self,
        keys: ApiKeys,
        static_token: str | None,
        static_limits: Limits | None = None,
        failed_logins: FailedLogins | None = None,
    ) -> None:
        self._keys = keys
        self._static = static_token
        self._static_limits = static_limits
        self._failed = failed_logins

    async def __call__(
        self, authorization: str | None, host: str | None = None, address: str = "unknown"
    ) -> Principal:
        """The caller of a request with this Authorization header, sent to ``host`` (the Host header)
        from ``address``: 429 before an API key's lookup while that address has failed too often."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("Send 'Authorization: Bearer <token>'.")
        if self._static and hmac.compare_digest(token.encode(), self._static.encode()):
            if self._static == DEVELOPMENT_TOKEN and not is_loopback(_hostname(host)):
                # a public token: only for requests to this machine by name, so that a web page whose
                # name now resolves to 127.0.0.1 (DNS rebinding) cannot use it from a browser here
                raise _unauthorized("The development token is accepted only at localhost; use an API key.")
            return Principal(owner=STATIC_OWNER, client_id=None, limits=self._static_limits, admin=True)
        if not token.startswith(KEY_SCHEME):
            raise _unauthorized("The token is not valid.")  # no key: nothing to look up
        if self._failed is not None:
            self._failed.check(address)
        client = await self._keys.authenticate(token)
        if client is None:
            if self._failed is not None:
                self._failed.failed(address)
            raise _unauthorized("The token is not valid.")
        limits = Limits(client.rate_per_second, client.burst, client.monthly_quota)
        return Principal(owner=client.id, client_id=client.id, limits=limits, admin=client.admin)


def remember_principal(scope: Scope, principal: Principal) -> None:
    """Keep the caller authenticated before the body was read, for the route (one lookup)."""
    scope.setdefault("state", {})[_STATE_KEY] = principal


def remembered_principal(scope: Scope) -> Principal | None:
    state = scope.get("state")
    principal = state.get(_STATE_KEY) if isinstance(state, dict) else None
    return principal if isinstance(principal, Principal) else None


def _hostname(host: str | None) -> str:
    """The name or address in a Host header: ``[::1]:8000`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    host = (host or "").strip()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, _port = host.rpartition(":")
    return name if colon and ":" not in name else host


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401, "Unauthorized", detail, code="UNAUTHORIZED", headers={"WWW-Authenticate": "Bearer"}
    )
