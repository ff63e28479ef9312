"""Pure pieces of a flow's ending: the decision, the callback's URL, body and signature, and when
to retry a failed delivery. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from contracts.documents import FlowDecision, SessionResult
from contracts.events import ReferencesMatched
from contracts.values import CallbackOutcome

__all__ = [
    "CALLBACK_METHOD",
    "CALL_FAILED",
    "COMPARISON_UNAVAILABLE",
    "DELIVERY_HEADER",
    "FACE_MISMATCH",
    "FLOW_TIMEOUT",
    "NO_REFERENCE_FRAME",
    "NO_VIDEO",
    "REFERENCES_UNAVAILABLE",
    "SIGNATURE_HEADER",
    "RetryPolicy",
    "callback_body",
    "encode_body",
    "is_retryable_status",
    "liveness_part",
    "match_outcome",
    "next_attempt_at",
    "sign",
    "signed_message",
    "with_reasons",
]

NO_VIDEO: Final = "NO_VIDEO"
FLOW_TIMEOUT: Final = "FLOW_TIMEOUT"
REFERENCES_UNAVAILABLE: Final = "REFERENCES_UNAVAILABLE"
NO_REFERENCE_FRAME: Final = "NO_REFERENCE_FRAME"
FACE_MISMATCH: Final = "FACE_MISMATCH"
COMPARISON_UNAVAILABLE: Final = "COMPARISON_UNAVAILABLE"
CALL_FAILED: Final = "CALL_FAILED"

SIGNATURE_HEADER: Final = "X-Faceproof-Signature"
#: The flow's id on every attempt of its callback: a controller that gets a second callback with the
#: same delivery (sent again because its first could not be recorded, docs/calls.md) drops it.
DELIVERY_HEADER: Final = "X-Faceproof-Delivery"
#: The method of every callback (the seed's PUT success/ and failure/).
CALLBACK_METHOD: Final = "PUT"


def liveness_part(result: SessionResult | None) -> FlowDecision:
    """What a flow's decision keeps of its liveness session's result."""
    if result is None:
        return FlowDecision()
    return FlowDecision(is_live=result.is_live, confidence=result.confidence, reasons=list(result.reasons))


def with_reasons(decision: FlowDecision, *reasons: str) -> FlowDecision:
    """``decision`` with ``reasons`` added after its own (each once)."""
    return decision.with_reasons(*reasons)


def match_outcome(decision: FlowDecision, event: ReferencesMatched) -> tuple[CallbackOutcome, FlowDecision]:
    """The flow's outcome once the matcher answered: live (the flow got here) AND a match."""
    if event.error is not None:
        return CallbackOutcome.FAILURE, decision.with_reasons(event.error.code.value)
    decided = decision.model_copy(update={"similarity": event.similarity, "match": event.match})
    if event.match and decision.is_live:
        return CallbackOutcome.SUCCESS, decided
    return CallbackOutcome.FAILURE, decided.with_reasons(FACE_MISMATCH)


def callback_body(flow_id: str, decision: FlowDecision | None) -> dict[str, Any]:
    """The result a signed callback carries (docs/calls.md: camelCase, unchanged)."""
    decision = decision or FlowDecision()
    return {
        "flowId": flow_id,
        "isLive": decision.is_live,
        "confidence": decision.confidence,
        "similarity": decision.similarity,
        "reasons": list(decision.reasons),
    }


def encode_body(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def signed_message(timestamp: int, method: str, path: str, body: bytes) -> bytes:
    """What a callback's signature covers: ``"<t>.<METHOD>.<path>." + body``. The path (as sent,
    percent-encoded) names the outcome and carries the controller's token, so a captured callback
    cannot be replayed to the other outcome or to another flow; the timestamp bounds its age."""
    return f"{timestamp}.{method.upper()}.{path}.".encode() + body


def client_callback_key(deployment_secret: str, owner: str) -> str:
    """The key that signs the callbacks of ``owner``'s flows that have no ``callbackSecret`` of their
    own: hex HMAC-SHA256(FACEPROOF_CALLBACK_SECRET, "faceproof callback key:" + client id).

    One key per client, so a flow one API client starts (with another controller's token and
    callback path) never carries a signature that another client's controller accepts, as one
    deployment-wide key did. ``faceproof keys callback-key NAME`` prints a client's key; the
    deployment secret itself signs nothing and is given to no controller."""
    message = f"faceproof callback key:{owner}".encode()
    return hmac.new(deployment_secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, *, method: str, path: str, body: bytes, timestamp: int) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256(secret, signed_message(...))>`` (docs/calls.md shows how a
    controller verifies it; examples/controller.py's ``verify`` is that snippet)."""
    message = signed_message(timestamp, method, path, body)
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float
    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def next_attempt_at(
    policy: RetryPolicy, *, attempt: int, first_at: datetime, now: datetime, rng: random.Random
) -> datetime | None:
    """When attempt ``attempt + 1`` is due, or None: attempts used up or past the retry deadline."""
    if attempt >= policy.max_attempts:
        return None
    at = now + timedelta(seconds=policy.delay(attempt, rng))
    if at > first_at + timedelta(seconds=policy.deadline_s):
        return None
    return at
