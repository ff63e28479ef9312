"""API keys: ``fp_`` + 32 random bytes (base64url). Only a prefix and a SHA-256 are stored.

The key has 256 bits of entropy, so a fast hash is right (no password-style KDF needed) and the
prefix can be shown in listings without helping an attacker.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["KEY_PREFIX_LENGTH", "hash_key", "key_prefix", "keys_match", "new_key"]

KEY_SCHEME = "fp_"
KEY_PREFIX_LENGTH = 12


def new_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    return key[:KEY_PREFIX_LENGTH]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_match(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), key_hash)
