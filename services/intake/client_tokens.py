"""Client tokens: the secret a browser holds for ONE session (its offer and status routes).

Only the SHA-256 of a token is stored. The gateway checks a presented token against it
(``services.gateway.client_tokens.token_matches``).
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["hash_client_token", "new_client_token"]


def new_client_token() -> tuple[str, str]:
    """A fresh random token and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, hash_client_token(token)


def hash_client_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
