"""Client tokens: random, stored as a hash, matched only by the right token."""

from __future__ import annotations

import hashlib

from services.gateway.client_tokens import bearer_token, token_matches
from services.intake.client_tokens import hash_client_token, new_client_token


def test_new_tokens_are_random_and_only_the_hash_is_returned_for_storage() -> None:
    token, stored = new_client_token()
    other, _ = new_client_token()
    assert token != other and len(token) >= 40
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored


def test_token_matches_only_its_hash() -> None:
    token, stored = new_client_token()
    assert token_matches(token, stored)
    assert not token_matches(token + "x", stored)
    assert not token_matches(new_client_token()[0], stored)
    assert not token_matches(None, stored)
    assert not token_matches("", stored)
    assert not token_matches(token, None)
    assert not token_matches("x" * 1000, hash_client_token("x" * 1000))


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
