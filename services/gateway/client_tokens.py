"""Client tokens: the secret a browser holds for ONE session (offer and status routes only).

Only the SHA-256 of a token is stored (made by ``services.intake.client_tokens``); tokens are
compared through their hashes in constant time. The token travels in the page URL's fragment
(never sent to a server, so never logged) and then in ``Authorization: Bearer`` headers.
"""

from __future__ import annotations

import hmac

from services.gateway.problems import ProblemError
from services.intake.client_tokens import hash_client_token

__all__ = ["bearer_token", "client_unauthorized", "token_matches"]

_MAX_TOKEN_LENGTH = 256


def token_matches(token: str | None, stored_hash: str | None) -> bool:
    """Whether ``token`` hashes to ``stored_hash`` (constant-time compare of the hashes)."""
    if not token or not stored_hash or len(token) > _MAX_TOKEN_LENGTH:
        return False
    return hmac.compare_digest(hash_client_token(token).encode(), stored_hash.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def client_unauthorized() -> ProblemError:
    """The 401 of a browser route called without its session's client token."""
    return ProblemError(
        401,
        "Unauthorized",
        "Send the session's client token as 'Authorization: Bearer <token>'.",
        code="UNAUTHORIZED",
        headers={"WWW-Authenticate": "Bearer"},
    )
