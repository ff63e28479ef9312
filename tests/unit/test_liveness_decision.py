"""The liveness decision: isLive, confidence 0-100 (50 is the line), reasons; and the identity gate."""

from __future__ import annotations

import numpy as np
import pytest

from services.liveness.challenges import ChallengeStatus, FailureReason, Thresholds, Verdict
from services.liveness.decision import (
    INSUFFICIENT_EVIDENCE,
    IdentityCheck,
    challenge_evidence,
    decide,
    spoof_evidence,
)

REAL = [0.98, 0.99, 1.0, 0.97]
SPOOF = [0.0, 0.02, 0.1, 0.05]


def passed(at: float) -> Verdict:
    return Verdict(ChallengeStatus.PASSED, progress=1.0, decided_at=at)


def failed(reason: FailureReason, at: float, progress: float = 0.0) -> Verdict:
    return Verdict(ChallengeStatus.FAILED, reason=reason, progress=progress, decided_at=at)


def test_all_passed_and_real_is_live() -> None:
    decision = decide([passed(1.0), passed(2.5), passed(4.0)], 3, REAL)
    assert decision.is_live and decision.reasons == ()
    assert 50 <= decision.confidence <= 100
    assert decision.to_dict() == {"isLive": True, "confidence": decision.confidence, "reasons": []}


def test_a_spoof_score_fails_a_perfect_challenge_run() -> None:
    decision = decide([passed(1.0), passed(2.0)], 2, SPOOF)
    assert not decision.is_live
    assert decision.reasons == (FailureReason.SPOOF_SUSPECTED.value,)
    assert decision.confidence < 10


def test_reasons_list_the_failed_challenge_then_the_spoof() -> None:
    decision = decide([passed(1.0), failed(FailureReason.TIMEOUT, 7.0, 0.2)], 3, SPOOF)
    assert decision.reasons == ("TIMEOUT", "SPOOF_SUSPECTED")
    assert not decision.is_live and decision.confidence < 50


@pytest.mark.parametrize(
    "reason",
    [
        FailureReason.NO_FACE,
        FailureReason.MULTIPLE_FACES,
        FailureReason.IDENTITY_CHANGED,
        FailureReason.WRONG_DIRECTION,
        FailureReason.FACE_TOO_SMALL,
        FailureReason.FACE_OUT_OF_FRAME,
    ],
)
def test_hard_failures_give_no_confidence(reason: FailureReason) -> None:
    decision = decide([failed(reason, 0.5, progress=0.9)], 2, REAL)
    assert decision.reasons == (reason.value,)
    assert decision.confidence == 0.0


def test_a_near_miss_timeout_is_weaker_evidence_than_no_movement() -> None:
    almost = decide([failed(FailureReason.TIMEOUT, 6.1, progress=0.95)], 1, REAL)
    never = decide([failed(FailureReason.TIMEOUT, 6.1, progress=0.0)], 1, REAL)
    assert not almost.is_live and not never.is_live
    assert never.confidence == 0.0 < almost.confidence < 50.0


def test_unanswered_challenges_count_as_timed_out() -> None:
    decision = decide([passed(1.0)], 3, REAL)
    assert decision.reasons == ("TIMEOUT",) and not decision.is_live


def test_too_few_spoof_scores_is_not_live() -> None:
    decision = decide([passed(1.0)], 1, [0.99, 0.99])
    assert not decision.is_live and decision.reasons == (INSUFFICIENT_EVIDENCE,)
    assert decision.confidence < 50
    # with another failure the missing score is not a reason of its own
    assert decide([failed(FailureReason.NO_FACE, 0.4)], 1, []).reasons == ("NO_FACE",)


def test_confidence_is_monotone_and_fifty_is_the_line() -> None:
    verdicts = [passed(1.0), passed(2.0)]
    previous = -1.0
    for median in np.linspace(0.0, 1.0, 101):
        decision = decide(verdicts, 2, [float(median)] * 3)
        assert decision.confidence >= previous
        assert decision.is_live == (decision.confidence >= 50.0)
        assert decision.is_live == (median >= 0.5)
        previous = decision.confidence
    # answering sooner never lowers it
    slow = decide([passed(5.5), passed(11.0)], 2, [1.0] * 3)
    fast = decide([passed(1.0), passed(2.0)], 2, [1.0] * 3)
    assert 50.0 <= slow.confidence < fast.confidence <= 100.0


def test_the_weakest_signal_bounds_the_confidence() -> None:
    barely_real = decide([passed(0.5)], 1, [0.55] * 3)  # instant answer, weak anti-spoofing
    assert barely_real.is_live and barely_real.confidence == pytest.approx(55.0)


def test_evidence_halves() -> None:
    assert spoof_evidence([1.0, 1.0, 1.0]) == 1.0
    assert spoof_evidence([0.0, 0.0, 0.0]) == -1.0
    assert spoof_evidence([0.5, 0.5, 0.5]) == 0.0
    assert spoof_evidence([1.0, 1.0]) is None
    strict = Thresholds(spoof_real_threshold=0.8)
    assert spoof_evidence([0.6] * 3, strict) == pytest.approx(-0.25)
    value, reason = challenge_evidence([passed(3.0)], 1, 0.0)  # half the 6 s window left
    assert value == pytest.approx(0.75) and reason is None
    with pytest.raises(ValueError, match="at least one"):
        challenge_evidence([], 0, 0.0)


def test_identity_check_keeps_the_first_face_as_reference() -> None:
    check = IdentityCheck(threshold=0.35)
    a = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    near = np.array([0.8, 0.6, 0.0], dtype=np.float32)
    other = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    assert check.min_cosine is None
    assert check.check(a)
    assert check.check(near)
    assert not check.check(other)
    assert check.min_cosine == pytest.approx(0.0)
    assert check.cosines == pytest.approx([0.8, 0.0])
