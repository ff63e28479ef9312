"""The notifier's pure pieces: decisions, callback URL, body and signature, retry schedule,
reference list items."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from contracts.documents import FlowDecision, SessionResult
from contracts.events import ReferencesMatched
from contracts.http import callback_url
from contracts.values import CallbackOutcome, ErrorCode, ErrorInfo, ModelInfo
from examples.controller import verify
from services.notifier.adapters import parse_reference
from services.notifier.outcome import (
    RetryPolicy,
    callback_body,
    encode_body,
    is_retryable_status,
    liveness_part,
    match_outcome,
    next_attempt_at,
    sign,
)

LIVE = liveness_part(
    SessionResult.from_row({"isLive": True, "confidence": 96.5, "reasons": [], "referenceImageKey": "k"})
)


def matched(**values: object) -> ReferencesMatched:
    model = ModelInfo(pack="test", licence="test", commercial_use=True)
    return ReferencesMatched(correlation_id="flow", request_id="r", model=model, **values)  # type: ignore[arg-type]


def test_live_and_a_match_is_success_with_the_similarity() -> None:
    outcome, decision = match_outcome(LIVE, matched(similarity=0.91, match=True))
    assert outcome is CallbackOutcome.SUCCESS
    assert decision == FlowDecision(is_live=True, confidence=96.5, similarity=0.91, match=True, reasons=[])
    assert callback_body("f1", decision) == {
        "flowId": "f1",
        "isLive": True,
        "confidence": 96.5,
        "similarity": 0.91,
        "reasons": [],
    }


def test_no_match_or_a_matcher_error_is_failure_with_a_reason() -> None:
    outcome, decision = match_outcome(LIVE, matched(similarity=0.2, match=False))
    assert outcome is CallbackOutcome.FAILURE and decision.reasons == ["FACE_MISMATCH"]
    error = ErrorInfo(code=ErrorCode.NO_FACE_IN_REFERENCES, detail="no face")
    outcome, decision = match_outcome(LIVE, matched(error=error))
    assert outcome is CallbackOutcome.FAILURE and decision.reasons == ["NO_FACE_IN_REFERENCES"]


def test_a_match_without_liveness_is_still_failure() -> None:
    outcome, _ = match_outcome(
        liveness_part(SessionResult(is_live=False)), matched(similarity=0.9, match=True)
    )
    assert outcome is CallbackOutcome.FAILURE


def test_callback_urls_escape_the_token() -> None:
    assert (
        callback_url("http://c:9000/cb/", CallbackOutcome.SUCCESS, "a/b c")
        == "http://c:9000/cb/success/a%2Fb%20c"
    )
    assert callback_url("http://c:9000", CallbackOutcome.FAILURE, "t") == "http://c:9000/failure/t"


def test_the_signature_covers_the_secret_method_path_time_and_body() -> None:
    """Signed here, verified by the controller's snippet (docs/calls.md, examples/controller.py)."""
    body = encode_body(callback_body("f1", LIVE))
    path = "/cb/failure/a%2Fb%20c"
    header = sign("secret", method="PUT", path=path, body=body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    now = 1_700_000_010
    assert verify("secret", "PUT", path, body, header, now=now)
    assert not verify("other", "PUT", path, body, header, now=now)
    assert not verify("secret", "PUT", "/cb/success/a%2Fb%20c", body, header, now=now)  # the other outcome
    assert not verify("secret", "PUT", "/cb/failure/another-token", body, header, now=now)  # another flow
    assert not verify("secret", "POST", path, body, header, now=now)
    assert not verify("secret", "PUT", path, body + b" ", header, now=now)
    assert not verify("secret", "PUT", path, body, header, now=1_700_001_000)  # replayed later
    assert not verify("secret", "PUT", path, body, "garbage", now=now)


def test_retryable_statuses() -> None:
    assert all(is_retryable_status(s) for s in (500, 502, 503, 504, 408, 429))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 410))


def test_backoff_grows_with_jitter_and_stops_at_the_deadline_or_the_attempts() -> None:
    policy = RetryPolicy(deadline_s=100, max_attempts=5, backoff_s=1, backoff_max_s=8)
    rng = random.Random(7)
    delays = [policy.delay(attempt, rng) for attempt in range(1, 7)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    start = datetime(2026, 1, 1, tzinfo=UTC)
    at = next_attempt_at(policy, attempt=1, first_at=start, now=start, rng=rng)
    assert at is not None and start < at <= start + timedelta(seconds=1)
    assert next_attempt_at(policy, attempt=5, first_at=start, now=start, rng=rng) is None
    late = start + timedelta(seconds=99.9)
    assert next_attempt_at(policy, attempt=2, first_at=start, now=late, rng=rng) is None


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("data:image/jpeg;base64,AAAA", ("data", "data:image/jpeg;base64,AAAA")),
        ("https://x.example/a.jpg", ("url", "https://x.example/a.jpg")),
        ("HTTP://x.example/a.jpg", ("url", "HTTP://x.example/a.jpg")),
        ("abc-123", ("id", "abc-123")),
        ({"id": "abc"}, ("id", "abc")),
        ({"url": "http://x/a"}, ("url", "http://x/a")),
    ],
)
def test_reference_items(item: object, expected: tuple[str, str]) -> None:
    assert parse_reference(item) == expected


@pytest.mark.parametrize("item", ["", 3, None, "ftp://x/a.jpg", "file:///etc/passwd", {"name": "x"}])
def test_reference_items_refused(item: object) -> None:
    with pytest.raises(ValueError):
        parse_reference(item)
